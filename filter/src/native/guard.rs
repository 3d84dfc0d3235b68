//! The panic barrier every exported hook runs behind: a panic in the filter becomes a logged
//! error and the hook's safe fallback (continue the request, refuse a configuration), never
//! an unwind across the FFI boundary into Envoy. The native build uses `panic = "unwind"`
//! (`[profile.native]`) so that the barrier can catch it.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Run `f`; on a panic, log it (naming `hook`) and return `fallback`.
pub fn guard<R>(hook: &str, fallback: R, f: impl FnOnce() -> R) -> R {
    // AssertUnwindSafe: after a panic the hook's state is dropped or left to its fallback;
    // shared state is behind mutexes whose poisoning is tolerated where they are taken.
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(payload) => {
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            log::error!("knhk: panic in {hook} contained ({why}); the request continues untouched");
            fallback
        }
    }
}

#[cfg(test)]
mod tests {
    use super::guard;

    /// A deliberately failing path returns the fallback instead of unwinding further.
    #[test]
    fn a_panic_becomes_the_fallback() {
        assert_eq!(guard("test", 7, || 1), 1);
        let caught = guard("test", 7, || -> i32 { panic!("deliberate") });
        assert_eq!(caught, 7);
        let index: usize = std::hint::black_box(9);
        let out_of_bounds = guard("test", None, || Some([0u8; 4][index]));
        assert_eq!(out_of_bounds, None);
    }
}
