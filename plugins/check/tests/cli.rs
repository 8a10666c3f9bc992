//! `palisade-check` as a user runs it: on every shipped example (valid, exit 0), on a broken
//! variant of every Palisade config in them (exit 1, the message naming file, filter and
//! field), on unreadable input (exit 2), and with `--format json`.
// Test code: helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::repo;
use palisade_check::find::{documents, find, What};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_in(dir: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade-check"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn run(args: &[&str]) -> Run {
    run_in(&repo(), args, None)
}

fn example_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("envoy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| format!("envoy/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    files.sort();
    files.push("deploy/compose/envoy.yaml".into());
    files
}

/// The Istio WasmPlugin examples of the docs, one file each in `dir`.
fn wasm_plugin_examples(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for m in [
        "rate_limit",
        "jwt_auth",
        "circuit_breaker",
        "bulkhead",
        "transform",
    ] {
        let md = std::fs::read_to_string(repo().join(format!("docs/{m}.md"))).unwrap();
        let mut block: Option<String> = None;
        for line in md.lines() {
            if line.starts_with("```") {
                match block.take() {
                    Some(b) if b.contains("kind: WasmPlugin") => {
                        let f = dir.join(format!("{m}-wasmplugin.yaml"));
                        std::fs::write(&f, b).unwrap();
                        out.push(f.display().to_string());
                    }
                    Some(_) => {}
                    None if line == "```yaml" => block = Some(String::new()),
                    None => {}
                }
            } else if let Some(b) = block.as_mut() {
                b.push_str(line);
                b.push('\n');
            }
        }
    }
    assert_eq!(out.len(), 5, "a WasmPlugin example per module");
    out
}

#[test]
fn every_shipped_example_is_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = example_files();
    files.extend(wasm_plugin_examples(tmp.path()));
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let r = run(&args);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // One line per config, each valid: the demo is one chain filter.
    assert!(
        r.stdout.lines().any(
            |l| l.starts_with("envoy/demo.yaml: palisade filter \"palisade\"")
                && l.ends_with(": valid")
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("{} files", files.len())),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(" 0 invalid"), "{}", r.stdout);
}

/// Navigate a location the checker reports (`a.b[0].c`, `documents[1]`, `WasmPlugin`).
fn at<'a>(docs: &'a mut [Value], location: &str) -> &'a mut Value {
    let mut segments = location.split('.').peekable();
    let mut v: &mut Value = if docs.len() > 1 {
        let first = segments.next().unwrap();
        let i: usize = first
            .strip_prefix("documents[")
            .and_then(|s| s.strip_suffix(']'))
            .unwrap()
            .parse()
            .unwrap();
        &mut docs[i]
    } else {
        &mut docs[0]
    };
    for seg in segments {
        if seg.is_empty() || seg == "WasmPlugin" {
            continue;
        }
        let (name, indices) = seg.split_once('[').map_or((seg, ""), |(n, rest)| (n, rest));
        if !name.is_empty() {
            v = &mut v[name];
        }
        for idx in indices.split('[').filter(|s| !s.is_empty()) {
            v = &mut v[idx.trim_end_matches(']').parse::<usize>().unwrap()];
        }
    }
    v
}

#[test]
fn a_broken_variant_of_every_example_config_is_invalid_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = example_files().iter().map(|f| repo().join(f)).collect();
    files.extend(
        wasm_plugin_examples(tmp.path())
            .into_iter()
            .map(PathBuf::from),
    );
    let mut variants = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let docs = documents(&text).unwrap();
        for (n, f) in find(&docs).into_iter().enumerate() {
            let What::Palisade { module, config } = f.what else {
                continue;
            };
            let config: Value = serde_json::from_slice(&config).unwrap();
            // An unknown member at the top, and (a chain) one in each policy's config.
            let mut top = config.clone();
            top["x_palisade_broken"] = json!(1);
            let mut breaks = vec![("x_palisade_broken".to_owned(), top)];
            for (i, entry) in config["chain"].as_array().into_iter().flatten().enumerate() {
                let policy = entry.as_object().unwrap().keys().next().unwrap().clone();
                let mut c = config.clone();
                c["chain"][i][policy.as_str()]["x_palisade_broken"] = json!(1);
                breaks.push((format!("chain[{i}].{policy}.x_palisade_broken"), c));
            }
            for (b, (field, broken_config)) in breaks.into_iter().enumerate() {
                let mut broken_docs = docs.clone();
                let node = at(&mut broken_docs, &f.location);
                if f.kind == "WasmPlugin" {
                    node["spec"]["pluginConfig"] = broken_config;
                } else {
                    node["config"]["configuration"]["value"] = json!(broken_config.to_string());
                }
                let yaml: Vec<String> = broken_docs
                    .iter()
                    .map(|d| serde_norway::to_string(d).unwrap())
                    .collect();
                let broken = tmp.path().join(format!(
                    "{}-{n}-{b}-broken.yaml",
                    file.file_stem().unwrap().to_string_lossy()
                ));
                std::fs::write(&broken, yaml.join("---\n")).unwrap();
                let broken = broken.display().to_string();
                let r = run(&[&broken]);
                assert_eq!(r.code, 1, "{broken}: {}{}", r.stdout, r.stderr);
                let line = r
                    .stdout
                    .lines()
                    .find(|l| l.contains("x_palisade_broken"))
                    .unwrap_or_else(|| panic!("{broken}: no error line: {}", r.stdout));
                assert!(
                    line.starts_with(&format!("{broken}: {} ", module.name)),
                    "{line}"
                );
                assert!(line.contains(&format!("{:?}", f.name)), "{line}");
                assert!(
                    line.contains(&format!("config field `{field}`: unknown field")),
                    "{line}"
                );
                variants += 1;
            }
        }
    }
    // 5 standalone Envoy configs, 5 WasmPlugins, the demo's and compose's chains (6 each).
    assert!(variants >= 22, "only {variants} variants");
}

#[test]
fn a_module_config_is_checked_with_the_modules_own_message() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.json");
    std::fs::write(
        &good,
        r#"{"rules": [{"name": "per_ip", "key": ["client_ip"], "limits": [{"capacity": 5, "refill": 1, "period": "1s"}]}]}"#,
    )
    .unwrap();
    let bad = tmp.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"rules": [{"name": "per_ip", "key": ["client_ip"], "limits": [{"capacity": 0, "refill": 1, "period": "1s"}]}]}"#,
    )
    .unwrap();
    let r = run_in(tmp.path(), &["rate_limit", "good.json"], None);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .starts_with("good.json: rate_limit config: valid\n"),
        "{}",
        r.stdout
    );
    let r = run_in(tmp.path(), &["rate_limit", "bad.json"], None);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.starts_with(
            "bad.json: rate_limit config: config field `rules[0].limits[0].capacity`: value \"0\" is out of range (allowed 1 to 1000000000)\n"
        ),
        "{}",
        r.stdout
    );
    // The same JSON under another module's parser is wrong in that module's words.
    let r = run_in(tmp.path(), &["bulkhead", "good.json"], None);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("rules[0].key"), "{}", r.stdout);
    // A pluginConfig on its own, as YAML.
    let yaml = tmp.path().join("limits.yaml");
    std::fs::write(
        &yaml,
        "rules:\n- name: per_ip\n  key: [client_ip]\n  limits: [{capacity: 5, refill: 1, period: 1s}]\n",
    )
    .unwrap();
    assert_eq!(
        run_in(tmp.path(), &["rate_limit", "limits.yaml"], None).code,
        0
    );
    // Standard input is read as JSON.
    let r = run_in(
        tmp.path(),
        &["rate_limit", "-"],
        Some(r#"{"rules": [], "mode": "all"}"#),
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("config field `rules`: missing"),
        "{}",
        r.stdout
    );
    // Not JSON at all: the parser says where.
    std::fs::write(tmp.path().join("syntax.json"), "{\"rules\": [").unwrap();
    let r = run_in(tmp.path(), &["rate_limit", "syntax.json"], None);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("EOF"), "{}", r.stdout);
}

#[test]
fn exit_code_2_means_the_input_could_not_be_read() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("bad.yaml"), "a: [unclosed\n").unwrap();
    for (file, says) in [
        ("missing.yaml", "missing.yaml: unreadable: cannot read"),
        ("bad.yaml", "bad.yaml: unreadable: not YAML or JSON"),
    ] {
        let r = run_in(tmp.path(), &[file], None);
        assert_eq!(r.code, 2, "{file}: {}", r.stdout);
        assert!(r.stdout.contains(says), "{file}: {}", r.stdout);
    }
    // Unreadable beats invalid, invalid beats valid.
    let demo = repo().join("envoy/demo.yaml").display().to_string();
    assert_eq!(run_in(tmp.path(), &[&demo, "bad.yaml"], None).code, 2);
    // Usage errors are 2 too.
    assert_eq!(run(&[]).code, 2);
    assert_eq!(run(&["rate_limit"]).code, 2);
    assert_eq!(run(&["--schema", "nonesuch"]).code, 2);
    assert_eq!(run(&["--format", "xml", "envoy/demo.yaml"]).code, 2);
}

#[test]
fn a_cluster_the_static_bootstrap_lacks_or_cannot_call_over_grpc_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(repo().join("envoy/rate_limit_global.yaml")).unwrap();
    // Modules resolve relative to the repository, as in the example.
    let write = |name: &str, text: String| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let misspelled = write(
        "misspelled.yaml",
        example.replace(r#""cluster": "rls""#, r#""cluster": "rsl""#),
    );
    let r = run(&[&misspelled]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains(
            "config field `rules[0].global.cluster`: invalid value \"rsl\": no such cluster in \
             this bootstrap's static_resources (its clusters: backend, rls)"
        ),
        "{}",
        r.stdout
    );
    let http1 = write(
        "http1.yaml",
        example.replace("http2_protocol_options: {}", "http_protocol_options: {}"),
    );
    let r = run(&[&http1]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("speaks HTTP/1.1"), "{}", r.stdout);
    // Clusters from CDS: the name cannot be judged, the config is valid.
    let cds = write(
        "cds.yaml",
        format!(
            "{}\ndynamic_resources:\n  cds_config: {{ads: {{}}}}\n",
            example.replace(r#""cluster": "rls""#, r#""cluster": "rsl""#)
        ),
    );
    let r = run(&[&cds]);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[test]
fn a_file_without_palisade_filters_is_invalid_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n",
    )
    .unwrap();
    let r = run_in(tmp.path(), &["svc.yaml"], None);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("no Palisade Wasm filter"), "{}", r.stdout);
    assert_eq!(
        run_in(tmp.path(), &["--allow-none", "svc.yaml"], None).code,
        0
    );
}

#[test]
fn json_output_names_file_filter_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("envoy/demo.yaml"))
        .unwrap()
        .replace("\"capacity\": 5", "\"capacity\": 0");
    assert!(
        text.contains("\"capacity\": 0"),
        "the demo's rate limit changed"
    );
    std::fs::write(tmp.path().join("demo.yaml"), text).unwrap();
    let r = run_in(
        tmp.path(),
        &["--format", "json", "demo.yaml", "gone.yaml"],
        None,
    );
    assert_eq!(r.code, 2);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["valid"], false);
    let files = report["files"].as_array().unwrap();
    assert_eq!(files[0]["file"], "demo.yaml");
    assert_eq!(files[0]["status"], "invalid");
    assert_eq!(files[1]["status"], "unreadable");
    let configs = files[0]["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 1, "the demo is one chain filter");
    let bad = &configs[0];
    assert_eq!(bad["valid"], false);
    assert_eq!(bad["module"], "palisade");
    assert_eq!(bad["kind"], "filter");
    assert_eq!(bad["name"], "palisade");
    assert!(bad["location"]
        .as_str()
        .unwrap()
        .ends_with("http_filters[0].typed_config"));
    assert_eq!(
        bad["error"]["field"],
        "chain[1].rate_limit.rules[0].limits[0].capacity"
    );
    assert!(bad["error"]["message"]
        .as_str()
        .unwrap()
        .contains("out of range"));
}

#[test]
fn the_printed_schema_is_the_committed_one() {
    for m in [
        "palisade",
        "rate_limit",
        "jwt_auth",
        "circuit_breaker",
        "bulkhead",
        "transform",
    ] {
        let r = run(&["--schema", m]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let committed =
            std::fs::read_to_string(repo().join(format!("schema/{m}.schema.json"))).unwrap();
        assert_eq!(r.stdout, committed, "{m}: run `make schema`");
    }
    assert_eq!(run(&["--schema", "probe"]).code, 2);
}
