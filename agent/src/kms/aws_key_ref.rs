//! What `kms.key_id` names for AWS KMS, and the aliases that number its versions.
//!
//! AWS KMS does not rotate asymmetric keys itself: a new key is put behind the alias. knhk
//! keeps that and numbers the keys so signatures can name a version: the logical key is an
//! alias (the *family*, e.g. `alias/knhk-checkpoints`) that always targets the newest key, and
//! `<family>/v<N>` targets version N for good. Accepted forms of `kms.key_id`:
//!
//! | form | family | version 1 |
//! |---|---|---|
//! | `alias/NAME`, or a bare `NAME` | `alias/NAME` | the key the alias targets, or a new key |
//! | `arn:aws:kms:REGION:ACCOUNT:alias/NAME` | `alias/NAME` (REGION must match the region) | as above |
//! | a key id (`1234abcd-…`, `mrk-…`) | `alias/knhk/<key id>` | that key |
//! | `arn:aws:kms:REGION:ACCOUNT:key/<key id>` | `alias/knhk/<key id>` | that key |

/// The longest family alias accepted: AWS allows 256 characters, and `/v<N>` must still fit.
pub const MAX_FAMILY_LEN: usize = 240;

/// A parsed `kms.key_id` for AWS KMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsKeyRef {
    /// The alias that targets the newest version; also the `key_id` signatures record.
    pub family: String,
    /// The key that becomes version 1 when the key id named a key rather than an alias.
    pub initial_key: Option<String>,
    /// The region an ARN names.
    pub arn_region: Option<String>,
}

impl AwsKeyRef {
    /// Parse `kms.key_id`; the error says what is wrong in words an operator can act on.
    pub fn parse(raw: &str) -> Result<AwsKeyRef, String> {
        let raw = raw.trim();
        if let Some(rest) = raw.strip_prefix("arn:") {
            return parse_arn(rest);
        }
        if is_key_id(raw) {
            return Ok(AwsKeyRef {
                family: format!("alias/knhk/{raw}"),
                initial_key: Some(raw.to_owned()),
                arn_region: None,
            });
        }
        let family = if raw.starts_with("alias/") {
            raw.to_owned()
        } else {
            format!("alias/{raw}")
        };
        check_alias(&family)?;
        Ok(AwsKeyRef {
            family,
            initial_key: None,
            arn_region: None,
        })
    }

    /// The alias that targets version `n` for good.
    pub fn version_alias(&self, n: u32) -> String {
        format!("{}/v{n}", self.family)
    }

    /// The version an alias name numbers, if it is one of this family's version aliases.
    pub fn version_of(&self, alias: &str) -> Option<u32> {
        let digits = alias.strip_prefix(&self.family)?.strip_prefix("/v")?;
        if digits.is_empty()
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        digits.parse().ok().filter(|n| *n >= 1)
    }
}

/// `arn:PARTITION:kms:REGION:ACCOUNT:alias/NAME` or `…:key/KEY-ID` (after `arn:`).
fn parse_arn(rest: &str) -> Result<AwsKeyRef, String> {
    let mut parts = rest.splitn(5, ':');
    let (Some(partition), Some(service), Some(region), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(
            "an ARN must read arn:aws:kms:REGION:ACCOUNT:alias/NAME or …:key/KEY-ID".to_owned(),
        );
    };
    if !partition.starts_with("aws") || service != "kms" {
        return Err(format!("{partition}:{service} is not an AWS KMS ARN"));
    }
    if !valid_region(region) {
        return Err(format!("the ARN's region {region:?} is not an AWS region"));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the ARN's account {account:?} is not 12 digits"));
    }
    let arn_region = Some(region.to_owned());
    if let Some(id) = resource.strip_prefix("key/") {
        if !is_key_id(id) {
            return Err(format!("{id:?} is not a KMS key id"));
        }
        return Ok(AwsKeyRef {
            family: format!("alias/knhk/{id}"),
            initial_key: Some(format!("arn:{rest}")),
            arn_region,
        });
    }
    if resource.starts_with("alias/") {
        check_alias(resource)?;
        return Ok(AwsKeyRef {
            family: resource.to_owned(),
            initial_key: None,
            arn_region,
        });
    }
    Err(format!(
        "the ARN's resource {resource:?} is neither key/KEY-ID nor alias/NAME"
    ))
}

/// A KMS key id: a UUID, or `mrk-` and 32 hex digits (a multi-Region key).
fn is_key_id(s: &str) -> bool {
    if let Some(hex) = s.strip_prefix("mrk-") {
        return hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn check_alias(alias: &str) -> Result<(), String> {
    let name = alias.strip_prefix("alias/").unwrap_or_default();
    if name.is_empty() {
        return Err("an alias needs a name after alias/".to_owned());
    }
    if alias.starts_with("alias/aws/") {
        return Err(format!(
            "{alias:?} is reserved for AWS managed keys, which cannot sign"
        ));
    }
    if alias.len() > MAX_FAMILY_LEN {
        return Err(format!(
            "the alias is {} characters; at most {MAX_FAMILY_LEN} leave room for the version aliases",
            alias.len()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
        || name.split('/').any(str::is_empty)
    {
        return Err(format!(
            "{alias:?} is not an alias name: A-Z a-z 0-9 / _ - only, with no empty segment"
        ));
    }
    Ok(())
}

/// An AWS region name such as `eu-west-1` or `us-gov-west-1`.
pub fn valid_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    (3..=5).contains(&parts.len())
        && region.len() <= 32
        && parts[0].len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each accepted form maps to its family and first key; version aliases round-trip.
    #[test]
    fn accepted_forms() {
        let uuid = "1234abcd-12ab-34cd-56ef-1234567890ab";
        for (raw, family, initial, region) in [
            ("alias/knhk-ckpt", "alias/knhk-ckpt", None, None),
            ("knhk-ckpt", "alias/knhk-ckpt", None, None),
            ("alias/team/prod_ckpt", "alias/team/prod_ckpt", None, None),
            (
                "arn:aws:kms:eu-west-1:123456789012:alias/knhk",
                "alias/knhk",
                None,
                Some("eu-west-1"),
            ),
            (
                uuid,
                &format!("alias/knhk/{uuid}") as &str,
                Some(uuid.to_owned()),
                None,
            ),
            (
                "mrk-1234abcd12ab34cd56ef1234567890ab",
                "alias/knhk/mrk-1234abcd12ab34cd56ef1234567890ab",
                Some("mrk-1234abcd12ab34cd56ef1234567890ab".to_owned()),
                None,
            ),
            (
                &format!("arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/{uuid}") as &str,
                &format!("alias/knhk/{uuid}") as &str,
                Some(format!(
                    "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/{uuid}"
                )),
                Some("us-gov-west-1"),
            ),
        ] {
            let k = AwsKeyRef::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(k.family, family, "{raw}");
            assert_eq!(k.initial_key, initial, "{raw}");
            assert_eq!(k.arn_region.as_deref(), region, "{raw}");
        }
        let k = AwsKeyRef::parse("alias/knhk").unwrap();
        assert_eq!(k.version_alias(12), "alias/knhk/v12");
        assert_eq!(k.version_of("alias/knhk/v12"), Some(12));
        for other in [
            "alias/knhk",
            "alias/knhk/v",
            "alias/knhk/v0",
            "alias/knhk/v01",
            "alias/knhk/v1x",
            "alias/knhkx/v1",
            "alias/knhk/v99999999999",
            "alias/other/v1",
        ] {
            assert_eq!(k.version_of(other), None, "{other}");
        }
    }

    /// Hostile and malformed forms are refused with a reason.
    #[test]
    fn refused_forms() {
        for raw in [
            "",
            "alias/",
            "alias/aws/ebs",
            "alias/a//b",
            "alias/a/",
            "alias/sp ace",
            "alias/../x",
            "alias/a\nb",
            &format!("alias/{}", "x".repeat(240)),
            "arn:aws:kms:eu-west-1:123456789012",
            "arn:aws:s3:eu-west-1:123456789012:alias/x",
            "arn:aws:kms:Europe:123456789012:alias/x",
            "arn:aws:kms:eu-west-1:12345:alias/x",
            "arn:aws:kms:eu-west-1:123456789012:key/not-a-uuid",
            "arn:aws:kms:eu-west-1:123456789012:grant/x",
            "arn:gcp:kms:eu-west-1:123456789012:alias/x",
        ] {
            assert!(AwsKeyRef::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }

    /// Region names: the shapes AWS uses, nothing else.
    #[test]
    fn regions() {
        for ok in [
            "eu-west-1",
            "us-east-2",
            "ap-southeast-3",
            "us-gov-west-1",
            "cn-north-1",
        ] {
            assert!(valid_region(ok), "{ok}");
        }
        for bad in [
            "",
            "eu",
            "eu-west",
            "EU-WEST-1",
            "eu-west-x",
            "eu_west_1",
            "eu-west-1 ",
            "e-west-1",
        ] {
            assert!(!valid_region(bad), "{bad:?}");
        }
    }
}
