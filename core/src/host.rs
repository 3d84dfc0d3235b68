//! The small host traits `core` reaches the proxy through, and their in-memory test doubles.

use std::fmt;

/// A host call failed (the filter maps proxy-wasm `Status` codes to this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host call `{call}` failed: {status}")]
pub struct HostError {
    /// Which call.
    pub call: &'static str,
    /// The host's status, rendered.
    pub status: String,
}

impl HostError {
    /// Build from any displayable status.
    pub fn new(call: &'static str, status: impl fmt::Debug) -> Self {
        HostError {
            call,
            status: format!("{status:?}"),
        }
    }
}

/// Result of a compare-and-swap write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// Written.
    Stored,
    /// Someone wrote in between: re-read and retry.
    Conflict,
}

/// Process-wide key/value store shared by all VMs of one `vm_id` (proxy-wasm shared data).
pub trait SharedStore {
    /// Read a value and its CAS token; `(None, None)` when absent.
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError>;
    /// Write `value` if the entry's CAS token still equals `cas` (`None`: unconditional).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<CasOutcome, HostError>;
}

/// Read-only access to the request headers of one request (lowercase names; pseudo-headers
/// such as `:path` and `:authority` included).
pub trait RequestHeaders {
    /// The value of `name`, raw bytes (headers may carry non-UTF-8).
    fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, [u8]>>;
}

#[cfg(any(test, feature = "test-util"))]
pub use doubles::*;

#[cfg(any(test, feature = "test-util"))]
mod doubles {
    //! Test doubles of the host traits.
    use super::*;
    use std::borrow::Cow;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// In-memory shared data with Envoy's CAS semantics (the token changes on every write).
    #[derive(Debug, Default)]
    pub struct MemoryShared {
        entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        /// When set, the next `n` conditional writes conflict (simulates a racing worker).
        pub forced_conflicts: RefCell<u32>,
    }

    impl SharedStore for MemoryShared {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
            Ok(match self.entries.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            })
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<CasOutcome, HostError> {
            if cas.is_some() {
                let mut forced = self.forced_conflicts.borrow_mut();
                if *forced > 0 {
                    *forced -= 1;
                    return Ok(CasOutcome::Conflict);
                }
            }
            let mut entries = self.entries.borrow_mut();
            let current = entries.get(key).map(|(_, c)| *c);
            if let Some(expected) = cas {
                if current != Some(expected) {
                    return Ok(CasOutcome::Conflict);
                }
            }
            let next = current.unwrap_or(0).wrapping_add(1);
            entries.insert(key.to_string(), (value.to_vec(), next));
            Ok(CasOutcome::Stored)
        }
    }

    /// Shared data that refuses every call, as a host whose shared-data store fails does.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct RefusingShared;

    impl SharedStore for RefusingShared {
        fn get(&self, _: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
            Err(HostError::new("get_shared_data", "InternalFailure"))
        }

        fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<CasOutcome, HostError> {
            Err(HostError::new("set_shared_data", "InternalFailure"))
        }
    }

    /// A request's headers as a list of (lowercase name, value) pairs.
    #[derive(Debug, Default, Clone)]
    pub struct FakeRequest(pub Vec<(String, Vec<u8>)>);

    impl FakeRequest {
        /// Start from a path.
        pub fn get(path: &str) -> Self {
            FakeRequest(vec![(":path".into(), path.as_bytes().to_vec())])
        }
        /// Add a header (name lowercased).
        pub fn with(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
            self.0
                .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
            self
        }
    }

    impl RequestHeaders for FakeRequest {
        fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
            self.0
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| Cow::Borrowed(v.as_slice()))
        }
    }
}
