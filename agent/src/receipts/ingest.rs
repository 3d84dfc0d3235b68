//! What a filter's batch goes through before its receipts become leaves: receipts claiming a
//! config epoch the agent never issued are refused (the whole batch), and each routing-key
//! digest is keyed with the agent's secret ([`DigestKey`]), so an export cannot be reversed to
//! low-entropy keys by whoever knows the routing salt.
//!
//! The filter's digest is SipHash-2-4 of the key under a key derived from the salt (public salt:
//! the filter must compute it per request without a secret of its own); the leaf carries
//! `HMAC-SHA-256(digest key, filter digest)[..16]`. Receipts without a key keep
//! [`NO_KEY`]. The digest key is 32 random bytes in `<data_dir>/digest-key` (mode 0600),
//! created at first start, never served; an admin can ask for a key's leaf digest
//! (`POST /v1/receipts/leaf-digest`, `knhk-agent receipts --key K`).

use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use knhk_core::receipt::{Receipt, NO_KEY};
use sha2::Sha256;

use super::ReceiptsError;

/// File name of the digest key under `data_dir`.
pub const DIGEST_KEY_FILE: &str = "digest-key";

/// The agent's secret for keying routing-key digests, held as an HMAC state already keyed
/// with it (cloned per digest: the two key blocks are hashed once, not per receipt).
#[derive(Clone)]
pub struct DigestKey(Hmac<Sha256>);

impl std::fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestKey(..)")
    }
}

fn io(path: &Path, source: std::io::Error) -> ReceiptsError {
    ReceiptsError::DigestKey(format!("{}: {source}", path.display()))
}

impl DigestKey {
    /// Load `<data_dir>/digest-key`, creating it (32 random bytes, mode 0600) when absent.
    pub fn open(data_dir: &Path) -> Result<DigestKey, ReceiptsError> {
        let path = data_dir.join(DIGEST_KEY_FILE);
        if !path.exists() {
            let mut key = [0u8; 32];
            getrandom::getrandom(&mut key).map_err(|e| io(&path, std::io::Error::other(e)))?;
            crate::private_file::create(&path, &key).map_err(|(at, e)| io(&at, e))?;
        }
        let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            ReceiptsError::DigestKey(format!("{}: expected 32 bytes", path.display()))
        })?;
        Ok(DigestKey::from_bytes(key))
    }

    /// A key from its bytes.
    pub fn from_bytes(key: [u8; 32]) -> DigestKey {
        // HMAC zero-pads a key shorter than its 64-byte block: the padded block is the key.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&key);
        DigestKey(<Hmac<Sha256> as hmac::digest::KeyInit>::new(
            &hmac::digest::generic_array::GenericArray::from(block),
        ))
    }

    /// The leaf digest of a filter digest; [`NO_KEY`] stays [`NO_KEY`].
    pub fn leaf_digest(&self, filter_digest: [u8; 16]) -> [u8; 16] {
        if filter_digest == NO_KEY {
            return NO_KEY;
        }
        let mut mac = self.0.clone();
        mac.update(&filter_digest);
        let tag = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag[..16]);
        out
    }
}

/// The newest config epoch the agent has issued.
pub type IssuedEpoch = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The checks and keying applied to every batch.
pub struct Ingest {
    /// Receipts may claim epochs `0..=issued()` (0: the filter's static configuration).
    pub issued: IssuedEpoch,
    /// Keys the routing-key digests.
    pub digest_key: DigestKey,
}

impl Ingest {
    /// Refuse the batch when a receipt claims an epoch never issued; key every digest.
    pub fn apply(&self, receipts: &mut [Receipt]) -> Result<(), ReceiptsError> {
        let issued = (self.issued)();
        if let Some((index, r)) = receipts
            .iter()
            .enumerate()
            .find(|(_, r)| r.config_epoch > issued)
        {
            return Err(ReceiptsError::UnknownEpoch {
                index,
                epoch: r.config_epoch,
                issued,
            });
        }
        for r in receipts.iter_mut() {
            r.key_digest = self.digest_key.leaf_digest(r.key_digest);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knhk_core::receipt::ReceiptBuilder;

    /// The pre-keyed state gives exactly HMAC-SHA-256 under the 32-byte key, as keyed from the
    /// key bytes each time (what older agents wrote into their logs).
    #[test]
    fn the_prekeyed_state_is_plain_hmac_of_the_digest_key() {
        let key = [0x5a; 32];
        let digest = [9u8; 16];
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(&digest);
        let tag = mac.finalize().into_bytes();
        assert_eq!(
            DigestKey::from_bytes(key).leaf_digest(digest)[..],
            tag[..16]
        );
    }

    /// A batch with an epoch beyond the issued one is refused naming the receipt; digests are
    /// keyed (deterministic per key, different per agent key), the no-key marker kept.
    #[test]
    fn epochs_are_checked_and_digests_keyed() {
        let ingest = Ingest {
            issued: Arc::new(|| 4),
            digest_key: DigestKey::from_bytes([7; 32]),
        };
        let mut bad = vec![
            ReceiptBuilder::new(0).config_epoch(4).build(),
            ReceiptBuilder::new(1).config_epoch(1 << 63).build(),
        ];
        let e = ingest.apply(&mut bad).unwrap_err().to_string();
        assert!(
            e.contains("receipt 1") && e.contains("9223372036854775808") && e.contains("4"),
            "{e}"
        );
        assert_eq!(
            bad[0].key_digest,
            ReceiptBuilder::new(0).build().key_digest,
            "unchanged on refusal"
        );
        let mut ok = vec![
            ReceiptBuilder::new(0)
                .config_epoch(0)
                .key_digest([1; 16])
                .build(),
            ReceiptBuilder::new(1)
                .config_epoch(4)
                .key_digest([1; 16])
                .build(),
            ReceiptBuilder::new(2).key_digest(NO_KEY).build(),
        ];
        ingest.apply(&mut ok).unwrap();
        assert_ne!(ok[0].key_digest, [1; 16]);
        assert_eq!(ok[0].key_digest, ok[1].key_digest);
        assert_eq!(ok[2].key_digest, NO_KEY);
        let other = DigestKey::from_bytes([8; 32]);
        assert_ne!(other.leaf_digest([1; 16]), ok[0].key_digest);
    }

    /// The key file is created once with mode 0600 and read back the same; a wrong length is
    /// refused.
    #[test]
    fn digest_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = DigestKey::open(dir.path()).unwrap();
        let b = DigestKey::open(dir.path()).unwrap();
        assert_eq!(a.leaf_digest([3; 16]), b.leaf_digest([3; 16]));
        let mode = std::fs::metadata(dir.path().join(DIGEST_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(DIGEST_KEY_FILE), b"short").unwrap();
        assert!(DigestKey::open(dir.path()).is_err());
        assert!(!format!("{a:?}").contains('3'));
    }
}
