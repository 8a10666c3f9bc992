//! The committed JSON Schemas (`schema/<module>.schema.json`):
//! - are what the wire types generate now (else: `make schema`);
//! - are valid draft 2020-12 schemas;
//! - accept every example config: `envoy/*.yaml`, the compose demo's config, `deploy/istio`
//!   manifests (when present), and the configs in `docs/<module>.md`;
//! - are never stricter than the modules' parsers: over the fuzz seeds, the examples and
//!   thousands of mutants of the examples, whatever a schema rejects, its parser rejects too.
// Test code: helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::repo;
use palisade_check::find::{documents, find, What};
use palisade_check::modules::{Module, MODULES};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn with_schema() -> impl Iterator<Item = &'static Module> {
    MODULES.iter().filter(|m| m.schema().is_some())
}

/// The standalone policies (each with its docs/<name>.md and fuzz seeds); not the chain.
fn policies() -> impl Iterator<Item = &'static Module> {
    with_schema().filter(|m| m.name != "palisade")
}

fn validator(m: &Module) -> jsonschema::Validator {
    let path = repo().join("schema").join(m.schema_file());
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make schema`)", path.display()));
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft202012::new(&schema)
        .unwrap_or_else(|e| panic!("{}: not a usable schema: {e}", path.display()))
}

#[test]
fn the_committed_schemas_are_what_the_wire_types_generate() {
    let mut stale = Vec::new();
    for m in with_schema() {
        let want = format!(
            "{}\n",
            serde_json::to_string_pretty(&m.schema().unwrap()).unwrap()
        );
        let path = repo().join("schema").join(m.schema_file());
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale or missing schemas (regenerate them with `make schema` and commit): {stale:?}"
    );
    // Nothing else lives in schema/: a schema of a removed module would mislead editors.
    let mut files: Vec<String> = std::fs::read_dir(repo().join("schema"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut want: Vec<String> = with_schema().map(|m| m.schema_file()).collect();
    want.sort();
    assert_eq!(files, want);
}

#[test]
fn the_schemas_are_valid_draft_2020_12_schemas() {
    for m in with_schema() {
        let schema = m.schema().unwrap();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        jsonschema::draft202012::meta::validate(&schema)
            .unwrap_or_else(|e| panic!("{}: {e}", m.name));
    }
}

/// An example config: where it is, its module, its exact bytes.
struct Example {
    source: String,
    module: &'static Module,
    config: Vec<u8>,
}

fn from_manifest(source: &str, text: &str, out: &mut Vec<Example>) -> usize {
    let docs = documents(text).unwrap_or_else(|e| panic!("{source}: {e}"));
    let mut n = 0;
    for f in find(&docs) {
        match f.what {
            What::Palisade { module, config } => {
                n += 1;
                out.push(Example {
                    source: format!("{source} {} {:?} at {}", f.kind, f.name, f.location),
                    module,
                    config,
                });
            }
            What::Unusable { reason, .. } => panic!("{source} {}: {reason}", f.name),
            What::Other { .. } => {}
        }
    }
    n
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// Fenced code blocks of a Markdown file: (language, first line number, text).
fn code_blocks(md: &str) -> Vec<(String, usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, usize, String)> = None;
    for (i, line) in md.lines().enumerate() {
        if let Some(fence) = line.trim_start().strip_prefix("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => current = Some((fence.trim().to_owned(), i + 2, String::new())),
            }
        } else if let Some((_, _, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    blocks
}

fn examples() -> Vec<Example> {
    let root = repo();
    let mut out = Vec::new();
    let mut files = Vec::new();
    yaml_files(&root.join("envoy"), &mut files);
    files.push(root.join("deploy/compose/envoy.yaml"));
    // Istio manifests: every WasmPlugin in them (other resources are ignored).
    yaml_files(&root.join("deploy/istio"), &mut files);
    files.sort();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let n = from_manifest(&rel, &text, &mut out);
        if rel.starts_with("envoy/") || rel.starts_with("deploy/compose/") {
            assert!(n > 0, "{rel}: no Palisade filter found");
        }
    }
    for m in policies() {
        let rel = format!("docs/{}.md", m.name);
        let md = std::fs::read_to_string(root.join(&rel)).unwrap();
        let mut in_doc = 0;
        for (lang, line, text) in code_blocks(&md) {
            let source = format!("{rel}:{line}");
            match lang.as_str() {
                "json" => {
                    in_doc += 1;
                    out.push(Example {
                        source,
                        module: m,
                        config: text.into_bytes(),
                    });
                }
                "yaml" => {
                    let n = from_manifest(&source, &text, &mut out);
                    if text.contains("configuration:") || text.contains("pluginConfig:") {
                        assert!(n > 0, "{source}: a config example the checker cannot find");
                    }
                    in_doc += n;
                }
                _ => {}
            }
        }
        assert!(in_doc >= 2, "{rel}: expected Envoy and Istio examples");
    }
    out
}

fn schema_errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn every_example_config_is_valid_and_validates_against_its_schema() {
    let examples = examples();
    let mut failures = Vec::new();
    let mut per_module = std::collections::BTreeMap::<&str, usize>::new();
    for ex in &examples {
        if let Err(e) = ex.module.check(&ex.config) {
            failures.push(format!("{}: the parser rejects it: {e}", ex.source));
        }
        if ex.module.schema().is_none() {
            continue; // probe: test-only, no schema
        }
        *per_module.entry(ex.module.name).or_default() += 1;
        let v = validator(ex.module);
        let instance: Value = serde_json::from_slice(&ex.config).unwrap();
        let errors = schema_errors(&v, &instance);
        if !errors.is_empty() {
            failures.push(format!("{}: the schema rejects it: {errors:?}", ex.source));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for m in with_schema() {
        assert!(
            // The chain: the demo and its compose twin.
            per_module.get(m.name).copied().unwrap_or(0)
                >= if m.name == "palisade" { 2 } else { 3 },
            "{}: too few examples checked: {per_module:?}",
            m.name
        );
    }
    eprintln!("{} example configs checked: {per_module:?}", examples.len());
}

/// Every value the soundness test tries in place of a member.
fn replacements() -> Vec<Value> {
    vec![
        Value::Null,
        json!(""),
        json!("x y"),
        json!("0"),
        json!("1s"),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(1_000_000_000_000u64),
        json!(true),
        json!([]),
        json!({}),
    ]
}

/// Mutants of `v`: each member removed or replaced, each list emptied, an unknown member added
/// to each object.
fn mutants(v: &Value) -> Vec<Value> {
    fn paths(v: &Value, at: Vec<PathSeg>, out: &mut Vec<Vec<PathSeg>>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let mut p = at.clone();
                    p.push(PathSeg::Key(k.clone()));
                    out.push(p.clone());
                    paths(child, p, out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    let mut p = at.clone();
                    p.push(PathSeg::Index(i));
                    out.push(p.clone());
                    paths(child, p, out);
                }
            }
            _ => {}
        }
    }
    fn slot<'a>(v: &'a mut Value, path: &[PathSeg]) -> &'a mut Value {
        path.iter().fold(v, |v, seg| match seg {
            PathSeg::Key(k) => &mut v[k.as_str()],
            PathSeg::Index(i) => &mut v[*i],
        })
    }
    let mut all = vec![Vec::new()];
    paths(v, Vec::new(), &mut all);
    let mut out = Vec::new();
    for p in &all {
        for r in replacements() {
            if p.is_empty() {
                out.push(r);
                continue;
            }
            let mut m = v.clone();
            let target = slot(&mut m, p);
            // Serde also reads a struct from a JSON list of its fields in order (`"client_ip":
            // [2]` is `{"trusted_hops": 2}`; `[]` is all defaults). The schemas do not offer that
            // positional form (docs/operators.md, "What the schemas do not check"), so an object
            // is never replaced by a list here.
            if target.is_object() && r.is_array() {
                continue;
            }
            *target = r;
            out.push(m);
        }
        let mut m = v.clone();
        if let Some((last, parent)) = p.split_last() {
            let removed = match (last, slot(&mut m, parent)) {
                (PathSeg::Key(k), Value::Object(obj)) => obj.remove(k).is_some(),
                (PathSeg::Index(i), Value::Array(list)) => {
                    list.remove(*i);
                    true
                }
                _ => false,
            };
            if removed {
                out.push(m);
            }
        }
        let mut m = v.clone();
        if let Some(obj) = slot(&mut m, p).as_object_mut() {
            obj.insert("x_unknown_field".into(), json!(1));
            out.push(m);
        }
    }
    out
}

#[derive(Clone, Debug)]
enum PathSeg {
    Key(String),
    Index(usize),
}

#[test]
fn what_a_schema_rejects_its_parser_rejects_too() {
    // (module, source, bytes): the fuzz seeds, then the examples and their mutants.
    let mut cases: Vec<(&'static Module, String, Vec<u8>)> = Vec::new();
    for m in policies() {
        let dir = repo().join("fuzz/seeds").join(format!("config_{}", m.name));
        let mut seeds: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "{}: no seeds", dir.display());
        for s in seeds {
            cases.push((m, s.display().to_string(), std::fs::read(&s).unwrap()));
        }
    }
    let seeds = cases.len();
    let chain = MODULES.iter().find(|m| m.name == "palisade").unwrap();
    for ex in examples() {
        if ex.module.schema().is_none() {
            continue;
        }
        let v: Value = serde_json::from_slice(&ex.config).unwrap();
        for (i, m) in mutants(&v).into_iter().enumerate() {
            // A standalone policy's config, and the same as the one entry of a chain.
            if ex.module.name != "palisade" {
                let entry = json!({"chain": [{ex.module.name: m.clone()}]});
                cases.push((
                    chain,
                    format!("{} mutant {i} in a chain", ex.source),
                    serde_json::to_vec(&entry).unwrap(),
                ));
            }
            cases.push((
                ex.module,
                format!("{} mutant {i}", ex.source),
                serde_json::to_vec(&m).unwrap(),
            ));
        }
        cases.push((ex.module, ex.source, ex.config));
    }
    let validators: std::collections::BTreeMap<&str, jsonschema::Validator> =
        with_schema().map(|m| (m.name, validator(m))).collect();
    let (mut rejected, mut accepted, mut parser_only) = (0usize, 0usize, 0usize);
    let mut unsound = Vec::new();
    for (m, source, bytes) in &cases {
        let parsed = m.check(bytes);
        let Ok(instance) = serde_json::from_slice::<Value>(bytes) else {
            assert!(
                parsed.is_err(),
                "{source}: not JSON, yet the parser accepts it"
            );
            continue;
        };
        let errors = schema_errors(&validators[m.name], &instance);
        match (errors.is_empty(), parsed) {
            (false, Ok(_)) => unsound.push(format!("{source}: schema says {errors:?}")),
            (false, Err(_)) => rejected += 1,
            (true, Ok(_)) => accepted += 1,
            (true, Err(_)) => parser_only += 1,
        }
    }
    assert!(
        unsound.is_empty(),
        "the schema rejects configs the parser accepts ({}):\n{}",
        unsound.len(),
        unsound.join("\n")
    );
    // The test means something only if the schemas reject a good share on their own.
    assert!(
        rejected > 1000 && accepted > 100,
        "rejected {rejected}, accepted {accepted}"
    );
    eprintln!(
        "{} cases ({seeds} fuzz seeds): both reject {rejected}, both accept {accepted}, only the parser rejects {parser_only} (cross-field and value rules)",
        cases.len()
    );
}
