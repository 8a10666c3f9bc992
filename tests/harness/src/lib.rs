//! Palisade's end-to-end harness: a real Envoy, the real `.wasm` modules from `dist/`, a real
//! upstream ([`palisade_upstream`]), and real HTTP between them.
//!
//! Tests build a bootstrap with [`Bootstrap`] (or render one of the shipped `envoy/*.yaml` files
//! with [`render_example`]), start it with [`Envoy::start`], and drive requests with [`client`].
//! Every port is chosen by the OS at run time (listener and admin bind port 0 and are discovered
//! through the admin API), so tests run in parallel. Readiness is polled on the admin port. When a
//! test fails, Envoy's log is printed; processes are killed on drop.
//!
//! This is test support code: like tests, it may panic to fail a test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bootstrap;
pub mod client;
pub mod demo;
pub mod envoy;
pub mod istio;
pub mod rls;
pub mod rls_fake;

pub use bootstrap::{
    free_port, render_example, render_example_with_rls, Bootstrap, FailurePolicy, Filter, LdsFile,
    Route,
};
pub use client::{Request, Response};
pub use envoy::{Envoy, EnvoyOptions, StartError};
pub use palisade_upstream::{Stats as UpstreamStats, Upstream};

use std::path::PathBuf;

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or(here)
}

/// Path of a built module, `dist/<name>.wasm`; panics with a hint if it was not built.
pub fn wasm_module(name: &str) -> PathBuf {
    let path = repo_root().join("dist").join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run `make build` first",
        path.display()
    );
    path
}

/// Start an upstream on a free loopback port.
pub fn start_upstream() -> Upstream {
    Upstream::start("127.0.0.1:0").expect("start upstream")
}

/// Poll `check` until it returns `Some`, or panic after `timeout` with `what` in the message.
/// The interval starts small and grows, so fast conditions are seen fast.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(100));
    }
}
