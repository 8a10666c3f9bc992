//! Every shipped `envoy/*.yaml` passes `envoy --mode validate`, as shipped (module paths relative
//! to the repository root, where `make demo` runs Envoy).
// Test code: helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_harness::envoy::validate;
use palisade_harness::repo_root;

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn every_example_config_validates() {
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("envoy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no envoy/*.yaml found");
    let failures: Vec<String> = files
        .iter()
        .filter_map(|file| {
            validate(file)
                .err()
                .map(|out| format!("{}:\n{out}", file.display()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "invalid example configs:\n{}",
        failures.join("\n")
    );
    eprintln!("validated {} example configs", files.len());
}
