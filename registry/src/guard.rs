//! Containing a panic of third-party code on input from outside.
//!
//! `apache_avro` (0.17, and 0.21 alike) panics instead of failing on some
//! schemas: names it cannot parse, a default it cannot check. Schemas arrive from
//! the network (the REST API) and from config files, and one panic must not stop
//! the server. [`contained`] runs such a call and turns its panic into an error;
//! every other panic still ends the process at once, as `panic = "abort"` did:
//! [`abort_on_other_panics`] installs the hook that says so, and the release
//! profile unwinds only so that `contained` can catch.
//!
//! Never: contains a panic of our own code, or anything holding state another
//! task could see half-changed (the calls wrapped take text and return values).

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// Set while a [`contained`] call runs on this thread.
    static CONTAINING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`; a panic inside it is an error with the panic's message.
pub fn contained<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    let was = CONTAINING.with(|c| c.replace(true));
    // The closure only reads its inputs and builds new values: nothing is left
    // half-changed when it unwinds.
    let out = catch_unwind(AssertUnwindSafe(f));
    CONTAINING.with(|c| c.set(was));
    out.map_err(|p| {
        let why = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        format!("{what} failed inside the Avro library: {why}")
    })
}

/// Installs the process's panic hook: a panic outside [`contained`] prints as
/// usual, then aborts the process (no core unwinds beside live ones); one inside
/// is left to `contained`, quietly.
pub fn abort_on_other_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if CONTAINING.with(Cell::get) {
            return;
        }
        default(info);
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_is_an_error_and_the_flag_is_restored() {
        let e = contained("parsing", || -> u32 { panic!("boom {}", 7) }).unwrap_err();
        assert!(e.contains("parsing") && e.contains("boom 7"), "{e}");
        assert_eq!(contained("x", || 5), Ok(5));
        assert!(!CONTAINING.with(Cell::get));
    }
}
