//! The real-Envoy integration harness, its raw HTTP/1.1 client and a scripted upstream (the demo
//! upstream and the mesh's probes are the crate's binaries).

pub mod crm;
pub mod harness;
pub mod http;
pub mod stub;

/// Fails the calling test with `msg`.
///
/// The harness's helpers return what a test works with, not `Result`s: a binary that is
/// missing, an Envoy that will not start or a request that gets no answer fails the test that
/// asked, with the log that explains it. This is the one place of the library allowed to panic.
#[track_caller]
#[allow(clippy::panic)] // a panic is how a Rust test fails
pub fn fail(msg: impl std::fmt::Display) -> ! {
    panic!("{msg}")
}

/// A test's shared gateway and the guard that prints its Envoy log if the test fails:
/// `let (g, _log) = gateway!(shared());` where `shared()` returns `Option<&'static Gateway>`.
/// Returns from the test when there is no Envoy outside CI (under `CI=true` the harness has
/// already failed it).
#[macro_export]
macro_rules! gateway {
    ($g:expr) => {
        match $g {
            Some(g) => (g, g.log_on_failure()),
            None => return,
        }
    };
}
