//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

/// The repository root: the tests read the shipped examples, docs and schemas from there.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}
