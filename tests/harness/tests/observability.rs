//! Labelled Prometheus metrics, and the dashboard and alerts built on them
//! (`deploy/observability`):
//! - every shipped Envoy config carries the shipped `stats_config` (native);
//! - through real Envoy running the demo, after the walk-through's traffic, `/stats/prometheus`
//!   shows the modules' metrics with `rule`, `key` and `reason` labels, and no per-rule metric
//!   is left with its rule in its name;
//! - every metric a dashboard query or an alert rule names is one that Envoy exposed then.
// Test code: helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_harness::demo::{assert_walkthrough, DemoTarget, Global};
use palisade_harness::{
    client, render_example, render_example_with_rls, repo_root, start_upstream, wait_for, Envoy,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_envoy_config_carries_the_shipped_stats_tags() {
    let want = yaml("deploy/observability/envoy-stats-config.yaml")["stats_config"].clone();
    assert!(want["stats_tags"].as_array().unwrap().len() >= 3);
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("envoy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .map(|n| format!("envoy/{n}"))
        .collect();
    files.sort();
    files.push("deploy/compose/envoy.yaml".into());
    for f in &files {
        assert_eq!(
            yaml(f)["stats_config"],
            want,
            "{f}: stats_config differs from deploy/observability/envoy-stats-config.yaml"
        );
    }
}

#[test]
fn the_istio_bootstrap_override_in_the_docs_has_the_shipped_tags() {
    let want =
        yaml("deploy/observability/envoy-stats-config.yaml")["stats_config"]["stats_tags"].clone();
    let md = std::fs::read_to_string(repo_root().join("docs/operators.md")).unwrap();
    let start = md
        .find("custom_bootstrap.json: |")
        .expect("the ConfigMap snippet");
    let json: String = md[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("```"))
        .collect();
    let snippet: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(snippet["stats_config"]["stats_tags"], want);
}

/// One sample of the Prometheus text exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad sample {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap();
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut v = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => v.push(chars.next().unwrap()),
                            '"' => break,
                            c => v.push(c),
                        }
                    }
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                    labels.insert(key, v);
                }
                (name.to_owned(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// The metric names a PromQL expression reads: label matchers, `by (...)` lists, strings and
/// durations removed, then every `palisade_*` or `envoy_*` identifier.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut s = String::new();
    let mut chars = expr.chars().peekable();
    // Drop string literals and `{...}` matchers.
    let mut depth = 0;
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
            }
            '{' => depth += 1,
            '}' => depth -= 1,
            c if depth == 0 => s.push(c),
            _ => {}
        }
    }
    // Drop grouping label lists.
    let mut cleaned = String::new();
    let words = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let mut rest = s.as_str();
    while let Some(i) = rest.find('(') {
        let before = &rest[..i];
        let word = before
            .trim_end()
            .rsplit(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .next()
            .unwrap_or("");
        cleaned.push_str(before);
        if words.contains(&word) {
            let close = rest[i..].find(')').unwrap() + i;
            rest = &rest[close + 1..];
        } else {
            cleaned.push('(');
            rest = &rest[i + 1..];
        }
    }
    cleaned.push_str(rest);
    cleaned
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != ':')
        .filter(|w| w.starts_with("palisade_") || w.starts_with("envoy_"))
        .map(str::to_owned)
        .collect()
}

/// Every PromQL expression of the dashboard (panel targets and template variables) and of the
/// alert rules, with where it is.
fn queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/observability/grafana-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    fn panels(v: &Value, out: &mut Vec<(String, String)>) {
        for p in v.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("").to_owned();
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((
                    format!("dashboard panel {title:?}"),
                    t["expr"].as_str().unwrap().to_owned(),
                ));
            }
            panels(&p["panels"], out);
        }
    }
    panels(&dash["panels"], &mut out);
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] == "query" {
            let q = &var["query"];
            let q = q["query"].as_str().or(q.as_str()).unwrap().to_owned();
            out.push((format!("dashboard variable {}", var["name"]), q));
        }
    }
    let alerts = yaml("deploy/observability/prometheus-alerts.yaml");
    for g in alerts["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            out.push((
                format!("alert {name}"),
                r["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

#[test]
fn metric_names_are_read_from_promql_without_labels_or_functions() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (rule, le) (rate(palisade_bulkhead_wait_ms_bucket{envoy_cluster_name="x"}[5m]))) / on (rule) group_left (envoy_x) max(palisade_bulkhead_in_flight)"#,
    );
    assert_eq!(
        names,
        [
            "palisade_bulkhead_in_flight",
            "palisade_bulkhead_wait_ms_bucket"
        ]
        .map(String::from)
        .into()
    );
    let q = queries();
    assert!(q.len() >= 20, "{q:?}");
    for (where_, expr) in &q {
        assert!(
            !metric_names(expr).is_empty(),
            "{where_}: names no metric: {expr}"
        );
    }
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn the_demo_exposes_labelled_metrics_and_everything_the_dashboard_and_alerts_read() {
    let upstream = start_upstream();
    // No rate limit service: the `rls` cluster on a port nothing listens on (the global rule's
    // local fallback, and its metrics, are what this checks).
    let yaml = render_example_with_rls(
        &repo_root().join("envoy/demo.yaml"),
        upstream.port(),
        palisade_harness::free_port(),
    );
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_walkthrough(&DemoTarget {
        base: envoy.url(""),
        admin: envoy.admin_url().to_owned(),
        cluster: "backend".to_owned(),
        global: Global::Fallback,
    });
    let scrape = || {
        let r = client::get(&format!("{}/stats/prometheus", envoy.admin_url())).unwrap();
        assert_eq!(r.status, 200);
        parse_exposition(&r.body)
    };
    // The breaker the walk-through opened (its gauge is refreshed every 500 ms; it turns to 2,
    // half-open, 5 s after opening).
    wait_for("the open breaker's gauge", Duration::from_secs(5), || {
        let s = scrape();
        let labels = [("rule", "per_cluster"), ("key", "backend")];
        (value(&s, "palisade_circuit_breaker_state", &labels) == Some(1.0)).then_some(())
    });
    // The bulkhead's waits: histograms reach the admin endpoint at Envoy's stats flush (5 s).
    let samples = wait_for("the waits' histogram", Duration::from_secs(15), || {
        let s = scrape();
        value(
            &s,
            "palisade_bulkhead_wait_ms_count",
            &[("rule", "backend")],
        )
        .is_some_and(|n| n >= 4.0)
        .then_some(s)
    });
    let has = |name: &str, labels: &[(&str, &str)]| {
        value(&samples, name, labels).unwrap_or_else(|| {
            let near: Vec<String> = samples
                .iter()
                .filter(|s| s.name.starts_with("palisade_"))
                .map(|s| format!("{} {:?} {}", s.name, s.labels, s.value))
                .collect();
            panic!(
                "no {name} {labels:?} in /stats/prometheus; palisade samples:\n{}",
                near.join("\n")
            )
        })
    };
    // What the walk-through did, as labelled series.
    assert_eq!(
        has("palisade_rate_limit_limited", &[("rule", "per_client_ip")]),
        2.0
    );
    assert!(has("palisade_rate_limit_allowed", &[("rule", "per_client_ip")]) >= 5.0);
    assert_eq!(
        has("palisade_jwt_auth_denied", &[("reason", "missing")]),
        1.0
    );
    assert_eq!(
        has("palisade_jwt_auth_denied", &[("reason", "claims")]),
        1.0
    );
    // 4 of the 6 slow requests, then 2 of the 3 low-priority ones.
    assert_eq!(
        has("palisade_bulkhead_wait_expired", &[("rule", "backend")]),
        6.0
    );
    assert_eq!(
        has("palisade_bulkhead_in_flight", &[("rule", "backend")]),
        0.0
    );
    assert!(
        has(
            "palisade_bulkhead_wait_ms_bucket",
            &[("rule", "backend"), ("le", "+Inf")]
        ) >= 4.0
    );
    assert!(
        has(
            "palisade_circuit_breaker_calls_failure",
            &[("rule", "per_cluster")]
        ) >= 5.0
    );
    assert_eq!(
        has(
            "palisade_circuit_breaker_transitions_to_open",
            &[("rule", "per_cluster")]
        ),
        1.0
    );
    assert!(
        has(
            "palisade_transform_transformed",
            &[("rule", "users_v1_to_v2")]
        ) >= 1.0
    );
    // No rule or key left inside a metric name: every per-rule series has its `rule` label.
    for s in samples.iter().filter(|s| s.name.starts_with("palisade_")) {
        for embedded in ["per_client_ip", "per_cluster", "users_v1_to_v2", "backend"] {
            assert!(
                !s.name.contains(embedded),
                "{} still embeds {embedded:?}: {:?}",
                s.name,
                s.labels
            );
        }
    }
    // Every metric the dashboard and the alerts read is one Envoy exposed.
    let exposed: BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    let mut missing = Vec::new();
    let mut read = BTreeSet::new();
    for (where_, expr) in queries() {
        for name in metric_names(&expr) {
            if !exposed.contains(name.as_str()) {
                missing.push(format!("{where_}: {name}"));
            }
            read.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "queries name metrics Envoy did not expose:\n{}",
        missing.join("\n")
    );
    eprintln!(
        "{} metrics read by the dashboard and alerts, all exposed",
        read.len()
    );
}

/// `envoy/rate_limit.yaml` (with its stats tags), running the chain module with `chain` instead.
fn rate_limit_example_as_chain(chain: &Value, upstream_port: u16) -> String {
    let text = render_example(&repo_root().join("envoy/rate_limit.yaml"), upstream_port);
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let indent = line.len() - line.trim_start().len();
        if line.trim_start() == "value: |" {
            // The block scalar: every following line indented deeper.
            while lines
                .peek()
                .is_some_and(|l| l.len() - l.trim_start().len() > indent || l.trim().is_empty())
            {
                lines.next();
            }
            out.push(format!("{}value: '{}'", " ".repeat(indent), chain));
        } else {
            out.push(
                line.replace("rate_limit.wasm", "palisade.wasm")
                    .replace("root_id: rate_limit", "root_id: palisade"),
            );
        }
    }
    assert!(out.iter().any(|l| l.contains("palisade.wasm")), "{text}");
    out.join("\n")
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_second_policy_of_one_kind_in_a_chain_is_told_apart_by_a_label() {
    let upstream = start_upstream();
    let chain = serde_json::json!({"chain": [
        {"rate_limit": {"rules": [{"name": "per_client_ip", "key": ["client_ip"],
            "limits": [{"capacity": 100, "refill": 1, "period": "1s"}]}]}},
        {"rate_limit": {"rules": [{"name": "per_path", "key": ["path"],
            "limits": [{"capacity": 2, "refill": 1, "period": "1m"}]}]}}
    ]});
    let envoy = Envoy::start(&rate_limit_example_as_chain(&chain, upstream.port()))
        .unwrap_or_else(|e| panic!("{e}"));
    let statuses: Vec<u16> = (0..4)
        .map(|_| client::get(&envoy.url("/x")).unwrap().status)
        .collect();
    assert_eq!(statuses, vec![200, 200, 429, 429]);
    let r = client::get(&format!("{}/stats/prometheus", envoy.admin_url())).unwrap();
    let samples = parse_exposition(&r.body);
    let first = [("rule", "per_client_ip")];
    let second = [("occurrence", "2"), ("rule", "per_path")];
    assert_eq!(
        value(&samples, "palisade_rate_limit_allowed", &first),
        Some(4.0)
    );
    assert_eq!(
        value(&samples, "palisade_rate_limit_allowed", &second),
        Some(2.0)
    );
    assert_eq!(
        value(&samples, "palisade_rate_limit_limited", &second),
        Some(2.0)
    );
    let first_has_no_occurrence = samples
        .iter()
        .filter(|s| s.labels.get("rule").map(String::as_str) == Some("per_client_ip"))
        .all(|s| !s.labels.contains_key("occurrence"));
    assert!(first_has_no_occurrence);
    assert!(
        samples.iter().all(|s| !s.name.contains("rate_limit_2")),
        "{}",
        r.body
    );
}
