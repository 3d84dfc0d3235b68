//! Limits and shared constants: the ground floor of the crate, importing nothing from it, so
//! that policy validation, the wire formats and the decision code can all name the same bounds
//! without importing one another.

/// Largest accepted configuration document, in bytes.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// Most routing-key sources, exclusions or class rules accepted in one list.
pub const MAX_LIST_ENTRIES: usize = 64;
/// Longest accepted header, cookie or query parameter name.
pub const MAX_NAME_BYTES: usize = 256;

/// Only this many leading bytes of a routing key are hashed (a guard against huge headers).
pub const MAX_KEY_BYTES: usize = 1024;
/// The feature-flags header when `flags.header` is not set; the filter removes it from client
/// requests even when no flags are configured, so a client cannot hand the upstream flags.
pub const DEFAULT_FLAGS_HEADER: &str = "x-knhk-flags";
/// Header used when no configured source yields a key and the fallback is on.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Slices per admission window; the window slides in steps of `window_ms / SLICES`.
pub const SLICES: usize = 10;

/// Most records one receipt batch may carry.
pub const MAX_BATCH_RECORDS: usize = 16_384;

/// Largest signed config envelope accepted, bytes (the policy itself is capped at
/// [`MAX_CONFIG_BYTES`]).
pub const MAX_ENVELOPE_BYTES: usize = 192 * 1024;
/// Largest envelope payload accepted, bytes: a policy at its limit ([`MAX_CONFIG_BYTES`]) plus
/// the epoch, timestamp and up to [`MAX_TRUSTED_KEYS`] next keys.
pub const MAX_PAYLOAD_BYTES: usize = MAX_CONFIG_BYTES + 16 * 1024;
/// Most signatures one envelope may carry.
pub const MAX_SIGNATURES: usize = 8;
/// Most keys a trusted key set may hold.
pub const MAX_TRUSTED_KEYS: usize = 16;

/// Largest accepted `admission.latency_sample_every` (time one request in at most 64).
pub const MAX_LATENCY_SAMPLE_EVERY: u16 = 64;
