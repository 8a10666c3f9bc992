//! Every shipped `envoy/*.yaml`, and the compose demo's `deploy/compose/envoy.yaml`, passes
//! `envoy --mode validate`, as shipped (module paths relative to the repository root, where
//! `make demo` runs Envoy); the compose config is the demo's, with only addresses changed.
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
    files.push(repo_root().join("deploy/compose/envoy.yaml"));
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

#[test]
fn the_compose_config_is_the_demo_config_with_only_its_addresses_changed() {
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("scripts/compose-config.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(repo_root().join("deploy/compose/envoy.yaml")).unwrap();
    assert!(
        committed == expected,
        "deploy/compose/envoy.yaml is out of date with envoy/demo.yaml: run\n  scripts/compose-config.sh > deploy/compose/envoy.yaml"
    );
}
