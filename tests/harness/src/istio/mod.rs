//! Istio: WasmPlugin manifests checked as the API server and istiod check them, the Wasm images
//! as OCI images, and Envoy configured the way istiod and istio-agent configure it
//! (`docs/istio.md`).
//!
//! - [`crd`]: a manifest against the WasmPlugin CRD's `openAPIV3Schema` and CEL rules ([`cel`]);
//! - [`manifest`]: what a WasmPlugin asks for, and its `pluginConfig` as a protobuf Struct prints;
//! - [`ecds`]: a bootstrap with file-based ECDS that delivers the plugins as istiod would;
//! - [`oci`]: the images of `make images` as OCI layouts, and the digests `deploy/istio` pins;
//! - [`registry`]: a loopback registry and `skopeo`, to push and read back those images;

pub mod cel;
pub mod crd;
pub mod ecds;
pub mod manifest;
pub mod oci;
pub mod registry;
pub mod yaml;

pub use crd::Crd;
pub use manifest::WasmPlugin;

use crate::repo_root;
use std::path::PathBuf;

/// Istio's WasmPlugin CRD and its conformance examples: the copy vendored in
/// `tests/harness/testdata/istio` (Istio's own files, Apache-2.0; a fresh clone has no
/// `../shared`), or `PALISADE_ISTIO_SHARED` (a directory holding `wasmplugin-crd.yaml` and
/// `testdata/`). `vendored_copy_matches_shared` checks the copy against `../shared/istio` when that
/// exists beside the checkout.
pub fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PALISADE_ISTIO_SHARED") {
        return PathBuf::from(dir);
    }
    repo_root().join("tests/harness/testdata/istio")
}

/// `../shared/istio` beside the checkout, if there is one (a developer machine).
pub fn workplace_shared_dir() -> Option<PathBuf> {
    let dir = repo_root().parent()?.join("shared/istio");
    dir.is_dir().then_some(dir)
}

/// The WasmPlugin CRD (panics with a hint when it is missing).
pub fn wasmplugin_crd() -> Crd {
    let path = shared_dir().join("wasmplugin-crd.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the vendored WasmPlugin CRD; PALISADE_ISTIO_SHARED overrides)",
            path.display()
        )
    });
    Crd::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `deploy/istio/*.yaml`, sorted.
pub fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("deploy/istio"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Every ```yaml block of `markdown` that holds a WasmPlugin, with its first line number.
pub fn wasmplugin_snippets(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut block: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        match &mut block {
            None if line.trim_start().starts_with("```yaml") => {
                block = Some((i + 2, String::new()))
            }
            None => {}
            Some(_) if line.trim_start().starts_with("```") => {
                if let Some((start, text)) = block.take() {
                    if text.contains("kind: WasmPlugin") {
                        out.push((start, text));
                    }
                }
            }
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    out
}

/// Every pinned digest of `plugins` that is not `digests[module]`, as a message naming the
/// manifest, the module and both digests (empty when all match).
pub fn digest_mismatches(
    plugins: &[WasmPlugin],
    digests: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for p in plugins {
        let pinned = match p.pinned_digest() {
            Ok(Some(d)) => d,
            Ok(None) => {
                out.push(format!("{} ({}): no digest pinned", p.origin, p.name));
                continue;
            }
            Err(e) => {
                out.push(e);
                continue;
            }
        };
        match digests.get(&p.module) {
            Some(d) if *d == pinned => {}
            Some(d) => out.push(format!(
                "{} ({}): pins {} sha256:{pinned}, but the image built is sha256:{d}: run `make istio-pin` and commit deploy/istio",
                p.origin, p.name, p.module
            )),
            None => out.push(format!("{} ({}): no image of {} to compare with", p.origin, p.name, p.module)),
        }
    }
    out
}
