//! Bearer credentials between the filter and the agent: the one grammar both sides accept
//! (`control.token` in the plugin configuration, `[api] filter_token_file` and
//! `admin_token_file` on the agent) and a holder that never prints its secret.

/// Shortest accepted token, bytes.
pub const MIN_TOKEN_BYTES: usize = 32;
/// Longest accepted token, bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Whether `token` is acceptable: [`MIN_TOKEN_BYTES`]..=[`MAX_TOKEN_BYTES`] printable ASCII
/// characters without spaces (what fits an `Authorization: Bearer` header unchanged).
pub fn is_acceptable_token(token: &str) -> bool {
    (MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_graphic())
}

/// A token the filter presents to the agent, kept as its `authorization` header value.
/// `Debug` shows no part of it, so a logged policy cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken {
    header: String,
}

impl BearerToken {
    /// The token from its text; `None` when [`is_acceptable_token`] refuses it.
    pub fn new(token: &str) -> Option<BearerToken> {
        is_acceptable_token(token).then(|| BearerToken {
            header: format!("Bearer {token}"),
        })
    }

    /// The `authorization` header value: `Bearer <token>`.
    pub fn header_value(&self) -> &str {
        &self.header
    }
}

impl core::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short, long, spaced and non-printable tokens are refused; an accepted one becomes its
    /// header and is never shown by `Debug`.
    #[test]
    fn tokens_are_checked_and_hidden() {
        assert!(BearerToken::new("short").is_none());
        assert!(BearerToken::new(&"x".repeat(MAX_TOKEN_BYTES + 1)).is_none());
        assert!(BearerToken::new(&format!("{} y", "x".repeat(40))).is_none());
        assert!(BearerToken::new(&format!("{}\u{7f}", "x".repeat(40))).is_none());
        assert!(BearerToken::new(&format!("{}é", "x".repeat(40))).is_none());
        let secret = "s".repeat(MIN_TOKEN_BYTES);
        let t = BearerToken::new(&secret).unwrap();
        assert_eq!(t.header_value(), format!("Bearer {secret}"));
        assert!(!format!("{t:?}").contains("sss"));
    }
}
