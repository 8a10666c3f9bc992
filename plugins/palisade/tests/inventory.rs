//! Adding a plugin means adding it to `palisade::KINDS`; this test then names every other list
//! that must know it — the build, the docs, the examples, the fuzz targets, the benchmark — so a
//! sixth plugin cannot ship half-wired.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn kinds() -> BTreeSet<String> {
    palisade::KINDS.iter().map(|k| k.name.to_owned()).collect()
}

/// Crates under `plugins/` that are not policies.
const INFRASTRUCTURE: &[&str] = &["core", "host", "probe", "palisade", "check"];

#[test]
fn every_policy_crate_under_plugins_is_in_the_chain_list_and_nothing_else_is() {
    let crates: BTreeSet<String> = std::fs::read_dir(repo().join("plugins"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            (e.path().join("Cargo.toml").is_file() && !INFRASTRUCTURE.contains(&name.as_str()))
                .then_some(name)
        })
        .collect();
    assert_eq!(
        crates,
        kinds(),
        "plugins/* policy crates vs palisade::KINDS"
    );
}

#[test]
fn the_makefile_builds_every_policy_as_a_standalone_module() {
    let makefile = read("Makefile");
    let line = makefile
        .lines()
        .find(|l| l.starts_with("POLICIES :="))
        .expect("Makefile has a POLICIES list");
    let listed: BTreeSet<String> = line
        .trim_start_matches("POLICIES :=")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, kinds(), "Makefile POLICIES vs palisade::KINDS");
}

#[test]
fn the_chain_module_links_every_policy_without_its_standalone_entry_point() {
    let manifest = read("plugins/palisade/Cargo.toml");
    for kind in kinds() {
        let dep = format!(
            "palisade-{} = {{ path = \"../{kind}\", default-features = false }}",
            kind.replace('_', "-")
        );
        assert!(
            manifest.contains(&dep),
            "plugins/palisade/Cargo.toml lacks `{dep}`"
        );
        let own = read(&format!("plugins/{kind}/Cargo.toml"));
        assert!(
            own.contains("default = [\"standalone\"]"),
            "plugins/{kind} needs the `standalone` default feature"
        );
    }
}

#[test]
fn every_policy_has_its_docs_example_fuzz_target_and_bench_cases() {
    let readme = read("README.md");
    let fuzz_manifest = read("fuzz/Cargo.toml");
    let bench = read("tests/bench/src/cases.rs");
    let suite = bench
        .split("pub fn suite_configs")
        .nth(1)
        .and_then(|rest| rest.split("\n}\n").next())
        .expect("tests/bench/src/cases.rs has suite_configs");
    for kind in kinds() {
        assert!(
            repo().join(format!("docs/{kind}.md")).is_file(),
            "docs/{kind}.md (its config reference) is missing"
        );
        assert!(
            readme.contains(&format!("docs/{kind}.md")),
            "README.md does not link docs/{kind}.md"
        );
        assert!(
            repo().join(format!("envoy/{kind}.yaml")).is_file(),
            "envoy/{kind}.yaml (its runnable example) is missing"
        );
        let target = format!("config_{kind}");
        assert!(
            repo()
                .join(format!("fuzz/fuzz_targets/{target}.rs"))
                .is_file()
                && fuzz_manifest.contains(&format!("name = \"{target}\"")),
            "fuzz target {target} is missing (fuzz/fuzz_targets and fuzz/Cargo.toml)"
        );
        assert!(
            bench.contains(&format!("module: \"{kind}\"")),
            "tests/bench/src/cases.rs has no standalone case for {kind}"
        );
        assert!(
            suite.contains(&format!("\"{kind}\"")),
            "tests/bench/src/cases.rs suite_configs (the chain cases) lacks {kind}"
        );
    }
}
