//! What is measured: the baselines, Envoy's native filters, and one case per plugin hot path.
//!
//! Plugin cases are a table ([`PLUGIN_CASES`]) mapping a case to its module in `dist/` and the
//! filter config that puts the plugin on its hot path. A case whose module is not built is
//! reported as "not built yet"; a module that is built but has no config here yet is reported as
//! such too, so a new plugin never silently drops out of the table. When a plugin lands, fill in
//! its `config` function (the JWT fixtures are in [`Fixtures`]).

use palisade_harness::{repo_root, FailurePolicy, Filter};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The test-only RS256 key material in `tests/bench/fixtures` (see its README).
#[derive(Debug, Clone, Copy)]
pub struct Fixtures {
    /// JWKS with the public key, `kid` `palisade-bench`.
    pub jwks: &'static str,
    /// A token signed by it, valid until 2100.
    pub token: &'static str,
    pub issuer: &'static str,
    pub audience: &'static str,
    /// JWKS with a P-256 key (`kid` `palisade-bench-es256`) and an Ed25519 key
    /// (`palisade-bench-eddsa`), and a token signed by each, sent in their own headers.
    pub jwks_ec: &'static str,
    pub token_es256: &'static str,
    pub token_eddsa: &'static str,
}

pub const FIXTURES: Fixtures = Fixtures {
    jwks: include_str!("../fixtures/jwks.json"),
    token: include_str!("../fixtures/token.jwt"),
    issuer: "https://issuer.bench.palisade.test",
    audience: "palisade-bench",
    jwks_ec: include_str!("../fixtures/jwks_ec.json"),
    token_es256: include_str!("../fixtures/token_es256.jwt"),
    token_eddsa: include_str!("../fixtures/token_eddsa.jwt"),
};

impl Fixtures {
    pub fn jwks(&self) -> &'static str {
        self.jwks.trim()
    }

    pub fn token(&self) -> &'static str {
        self.token.trim()
    }

    pub fn jwks_ec(&self) -> &'static str {
        self.jwks_ec.trim()
    }
}

/// The headers carrying the ES256 and EdDSA tokens (every request has both, and the RS256 bearer).
pub const ES256_HEADER: &str = "x-bench-es256";
pub const EDDSA_HEADER: &str = "x-bench-eddsa";

/// A signature algorithm the JWT cases measure besides RS256 (issue 18).
#[derive(Debug, Clone, Copy)]
pub enum EcAlg {
    Es256,
    EdDsa,
}

impl EcAlg {
    fn header(self) -> &'static str {
        match self {
            EcAlg::Es256 => ES256_HEADER,
            EcAlg::EdDsa => EDDSA_HEADER,
        }
    }
}

/// Path and headers of the request every case receives. Every case gets the same request (the
/// bearer token and the header the mutations remove included), so parsing costs the same
/// everywhere and only what the filter does differs.
pub const REQUEST_PATH: &str = "/bench/item?page=2&q=widgets";

pub fn request_headers(f: &Fixtures) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("Bearer {}", f.token())),
        ("user-agent", "palisade-bench".to_owned()),
        ("accept", "*/*".to_owned()),
        ("x-bench-remove", "1".to_owned()),
        (ES256_HEADER, f.token_es256.trim().to_owned()),
        (EDDSA_HEADER, f.token_eddsa.trim().to_owned()),
    ]
}

/// What a case is, for the ratios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No filter: what Envoy costs by itself.
    None,
    /// The trivial Wasm filter (probe: one header read, one header write).
    Floor,
    /// One of Envoy's own filters.
    Native,
    /// A reference point that is neither (the probe counting in shared data).
    Reference,
    /// A Palisade plugin.
    Plugin,
}

/// Whether a case can run.
#[derive(Debug, Clone)]
pub enum Setup {
    /// The filters to put in front of the router.
    Filters(Vec<Filter>),
    /// Why not (shown in the table instead of figures).
    Unavailable(String),
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub kind: Kind,
    /// One line: what the filter does on this path.
    pub what: &'static str,
    pub setup: Setup,
    /// The native case this one is compared with (ratio B).
    pub native: Option<&'static str>,
    /// A stat that must be non-zero after a request, proving the filter really ran (a native
    /// filter left disabled by default — local_ratelimit's `filter_enabled` — would measure
    /// nothing).
    pub proof_stat: Option<&'static str>,
    /// The most A (added CPU in floors) an issue allows this case, flagged in the notes above it.
    pub target_a: Option<f64>,
}

/// A plugin hot path to measure.
pub struct PluginCase {
    pub name: &'static str,
    /// `dist/<module>.wasm`.
    pub module: &'static str,
    pub what: &'static str,
    /// The plugin's config for this path; `None` until the plugin's schema exists.
    pub config: fn(&Fixtures) -> Option<Value>,
    pub native: Option<&'static str>,
}

/// Every plugin case of issue 8, in table order.
pub const PLUGIN_CASES: &[PluginCase] = &[
    PluginCase {
        name: "rate_limit",
        module: "rate_limit",
        what: "allowing: a client_ip bucket that never empties",
        config: |_| Some(rate_limit_config()),
        native: Some("local_ratelimit"),
    },
    PluginCase {
        name: "rate_limit_header",
        module: "rate_limit",
        what: "allowing: the same bucket keyed by a request header instead of client_ip",
        config: |_| {
            let mut c = rate_limit_config();
            c["rules"][0]["key"] = json!([{"header": "user-agent"}]);
            Some(c)
        },
        native: Some("local_ratelimit"),
    },
    PluginCase {
        name: "jwt_auth_cached",
        module: "jwt_auth",
        what: "valid RS256 token, verification cached",
        config: |f| Some(jwt_auth_config(f, true)),
        native: Some("jwt_authn"),
    },
    PluginCase {
        name: "jwt_auth_uncached",
        module: "jwt_auth",
        what: "valid RS256 token, verified every request",
        config: |f| Some(jwt_auth_config(f, false)),
        native: Some("jwt_authn"),
    },
    PluginCase {
        name: "jwt_auth_es256_uncached",
        module: "jwt_auth",
        what: "valid ES256 token (own header), verified every request",
        config: |f| Some(jwt_auth_ec_config(f, EcAlg::Es256)),
        native: Some("jwt_authn_es256"),
    },
    PluginCase {
        name: "jwt_auth_eddsa_uncached",
        module: "jwt_auth",
        what: "valid EdDSA (Ed25519) token (own header), verified every request",
        config: |f| Some(jwt_auth_ec_config(f, EcAlg::EdDsa)),
        native: Some("jwt_authn_eddsa"),
    },
    PluginCase {
        name: "circuit_breaker",
        module: "circuit_breaker",
        what: "closed",
        // A constant key: the direct-response route has no cluster for the default key.
        config: |_| Some(json!({"rules": [{"name": "bench", "key": {"constant": "bench"}}]})),
        native: None,
    },
    PluginCase {
        name: "bulkhead",
        module: "bulkhead",
        what: "under its limit",
        config: |_| Some(json!({"rules": [{"name": "bench", "max_concurrent": 1_000_000}]})),
        native: None,
    },
    PluginCase {
        name: "transform",
        module: "transform",
        what: "5 header ops + a query rewrite (as header_mutation)",
        // The same operations as `header_mutation()` below.
        config: |_| Some(transform_config()),
        native: Some("header_mutation"),
    },
];

/// rate_limit on its allowing path: one rule keyed by client IP, a bucket that never empties. Also
/// used by the rate_limit micro-benchmarks, so both measure the same configuration.
pub fn rate_limit_config() -> Value {
    json!({"rules": [{
        "name": "bench",
        "key": ["client_ip"],
        "limits": [{"capacity": 1_000_000_000u64, "refill": 1_000_000_000u64, "period": "1s"}]
    }]})
}

/// jwt_auth with the bench's RS256 JWKS inline, forwarding the token like `jwt_authn()`; the
/// uncached case turns the verified-token cache off so every request verifies the signature.
pub fn jwt_auth_config(f: &Fixtures, cached: bool) -> Value {
    let jwks: Value = serde_json::from_str(f.jwks()).unwrap_or(Value::Null);
    let mut config = json!({
        "providers": [{"name": "bench", "issuer": f.issuer, "audiences": [f.audience],
                       "jwks": {"inline": jwks}, "forward": true}],
        "rules": [{"providers": ["bench"]}]
    });
    if !cached {
        config["cache"] = json!({"max_entries": 0});
    }
    config
}

/// jwt_auth verifying the ES256 or EdDSA token from its own header, cache off, like
/// `jwt_authn_ec()`.
pub fn jwt_auth_ec_config(f: &Fixtures, alg: EcAlg) -> Value {
    let jwks: Value = serde_json::from_str(f.jwks_ec()).unwrap_or(Value::Null);
    json!({
        "providers": [{"name": "bench", "issuer": f.issuer, "audiences": [f.audience],
                       "jwks": {"inline": jwks}, "from_headers": [{"name": alg.header()}]}],
        "rules": [{"providers": ["bench"]}],
        "cache": {"max_entries": 0}
    })
}

/// transform doing what `header_mutation()` does: 3 sets, 1 append, 1 remove, 1 query set.
pub fn transform_config() -> Value {
    json!({"rules": [{"name": "bench", "request": {
        "headers": {
            "remove": ["x-bench-remove"],
            "set": [{"name": "x-bench-set-1", "value": "one"},
                    {"name": "x-bench-set-2", "value": "two"},
                    {"name": "x-bench-set-3", "value": "three"}],
            "append": [{"name": "x-bench-append", "value": "four"}]
        },
        "query": {"set": [{"name": "page", "value": "1"}]}
    }}]})
}

pub fn dist_module(module: &str) -> PathBuf {
    repo_root().join("dist").join(format!("{module}.wasm"))
}

/// The probe in its floor configuration.
pub fn floor_filter() -> Filter {
    Filter::wasm(
        "probe",
        &json!({"header": "x-palisade-probe", "count": false}),
    )
}

/// Every case, baselines first, then natives, then plugins.
pub fn all(f: &Fixtures) -> Vec<Case> {
    let mut cases = vec![
        Case {
            name: "none",
            kind: Kind::None,
            what: "no filter (router only)",
            setup: Setup::Filters(Vec::new()),
            native: None,
            proof_stat: None,
            target_a: None,
        },
        Case {
            name: "floor",
            kind: Kind::Floor,
            what: "probe: 1 header read + 1 header write",
            setup: if dist_module("probe").is_file() {
                Setup::Filters(vec![floor_filter()])
            } else {
                Setup::Unavailable("not built yet (dist/probe.wasm missing)".to_owned())
            },
            native: None,
            proof_stat: Some("wasmcustom.palisade.probe.requests"),
            target_a: None,
        },
        Case {
            name: "probe_shared",
            kind: Kind::Reference,
            what: "probe count: true: shared-data read + CAS write + 1 header write",
            setup: if dist_module("probe").is_file() {
                Setup::Filters(vec![Filter::wasm(
                    "probe",
                    &json!({"header": "x-palisade-probe", "count": true}),
                )])
            } else {
                Setup::Unavailable("not built yet (dist/probe.wasm missing)".to_owned())
            },
            native: None,
            proof_stat: Some("wasmcustom.palisade.probe.requests"),
            target_a: None,
        },
        // The price of one hostcall of each kind the policies make most: (case − floor) / 10.
        probe_with(
            "probe_metrics",
            "the floor + 10 more counter increments (proxy_increment_metric)",
            json!({"header": "x-palisade-probe", "extra_increments": 10}),
        ),
        probe_with(
            "probe_header_writes",
            "the floor + 10 more request header writes (proxy_replace_header_map_value)",
            json!({"header": "x-palisade-probe", "extra_header_writes": 10}),
        ),
        Case {
            name: "local_ratelimit",
            kind: Kind::Native,
            what: "token bucket that never empties",
            setup: Setup::Filters(vec![local_ratelimit()]),
            native: None,
            proof_stat: Some("bench_local_ratelimit.http_local_rate_limit.ok"),
            target_a: None,
        },
        Case {
            name: "header_mutation",
            kind: Kind::Native,
            what: "5 header ops + 1 query param set",
            setup: Setup::Filters(vec![header_mutation()]),
            native: None,
            proof_stat: None, // header_mutation has no stats
            target_a: None,
        },
        Case {
            name: "jwt_authn",
            kind: Kind::Native,
            what: "RS256 token, verified every request (no cache: the default)",
            setup: Setup::Filters(vec![jwt_authn(f, false)]),
            native: None,
            proof_stat: Some("http.ingress.jwt_authn.allowed"),
            target_a: None,
        },
        Case {
            name: "jwt_authn_es256",
            kind: Kind::Native,
            what: "ES256 token from its own header, verified every request",
            setup: Setup::Filters(vec![jwt_authn_ec(f, EcAlg::Es256)]),
            native: None,
            proof_stat: Some("http.ingress.jwt_authn.allowed"),
            target_a: None,
        },
        Case {
            name: "jwt_authn_eddsa",
            kind: Kind::Native,
            what: "EdDSA token from its own header, verified every request",
            setup: Setup::Filters(vec![jwt_authn_ec(f, EcAlg::EdDsa)]),
            native: None,
            proof_stat: Some("http.ingress.jwt_authn.allowed"),
            target_a: None,
        },
        Case {
            name: "jwt_authn_cached",
            kind: Kind::Native,
            what: "RS256 token, jwt_cache_config on",
            setup: Setup::Filters(vec![jwt_authn(f, true)]),
            native: None,
            proof_stat: Some("http.ingress.jwt_authn.jwt_cache_hit"),
            target_a: None,
        },
    ];
    for p in PLUGIN_CASES {
        let path = dist_module(p.module);
        let setup = if !path.is_file() {
            Setup::Unavailable(format!("not built yet (dist/{}.wasm missing)", p.module))
        } else {
            match (p.config)(f) {
                Some(config) => Setup::Filters(vec![Filter::wasm(p.module, &config)]),
                None => Setup::Unavailable(format!(
                    "dist/{}.wasm is built but has no bench config yet (tests/bench/src/cases.rs)",
                    p.module
                )),
            }
        };
        cases.push(Case {
            name: p.name,
            kind: Kind::Plugin,
            what: p.what,
            setup,
            native: p.native,
            proof_stat: None,
            // Issue 14: a standalone module adds at most 1.2 floors.
            target_a: Some(1.2),
        });
    }
    // The whole suite on its allow path: five standalone modules chained (five VMs, five passes),
    // against the same five policies in one `palisade` module, against Envoy's native chain.
    cases.push(Case {
        name: "native_chain",
        kind: Kind::Native,
        what: "jwt_authn (cached) + local_ratelimit + header_mutation",
        setup: Setup::Filters(vec![
            jwt_authn(f, true),
            local_ratelimit(),
            header_mutation(),
        ]),
        native: None,
        proof_stat: Some("http.ingress.jwt_authn.jwt_cache_hit"),
        target_a: None,
    });
    let modules = [
        "jwt_auth",
        "rate_limit",
        "circuit_breaker",
        "bulkhead",
        "transform",
    ];
    let missing: Vec<&str> = modules
        .iter()
        .copied()
        .filter(|m| !dist_module(m).is_file())
        .collect();
    cases.push(Case {
        name: "five_modules",
        kind: Kind::Plugin,
        what: "the five standalone modules chained (jwt cached, rate_limit, breaker, bulkhead, transform)",
        setup: if missing.is_empty() {
            Setup::Filters(
                suite_configs(f)
                    .into_iter()
                    .map(|(m, c)| Filter::wasm(m, &c))
                    .collect(),
            )
        } else {
            Setup::Unavailable(format!("not built yet ({} missing)", missing.join(", ")))
        },
        native: Some("native_chain"),
        proof_stat: Some("wasmcustom.palisade.jwt_auth.allowed"),
        target_a: None,
    });
    cases.push(Case {
        name: "palisade_chain",
        kind: Kind::Plugin,
        what: "the same five policies in one palisade module",
        setup: if dist_module("palisade").is_file() {
            Setup::Filters(vec![palisade_filter(f)])
        } else {
            Setup::Unavailable("not built yet (dist/palisade.wasm missing)".to_owned())
        },
        native: Some("native_chain"),
        proof_stat: Some("wasmcustom.palisade.jwt_auth.allowed"),
        // Issue 14: the five policies in one module add at most 1.5 floors.
        target_a: Some(1.5),
    });
    cases.extend(variant_cases(f, &variants_from_env()));
    cases
}

/// The cases measured again with modules of another build (`BENCH_VARIANTS`), in the same run.
pub const VARIANT_CASES: &[&str] = &[
    "rate_limit",
    "jwt_auth_cached",
    "jwt_auth_uncached",
    "transform",
    "palisade_chain",
];

/// `BENCH_VARIANTS=label=dir[,label=dir…]`: directories holding other builds of the modules (same
/// file names as `dist/`), e.g. `make bench-opt-levels`'s opt-level `s` and `z` builds. Each adds
/// the [`VARIANT_CASES`] again as `<case>@<label>`, measured in the same interleaved rounds as the
/// shipped build, so the two compare within one run.
pub fn variants_from_env() -> Vec<(String, PathBuf)> {
    std::env::var("BENCH_VARIANTS")
        .ok()
        .map(|v| parse_variants(&v))
        .unwrap_or_default()
}

pub fn parse_variants(spec: &str) -> Vec<(String, PathBuf)> {
    spec.split(',')
        .filter_map(|item| {
            let (label, dir) = item.trim().split_once('=')?;
            (!label.is_empty() && !dir.is_empty()).then(|| (label.to_owned(), PathBuf::from(dir)))
        })
        .collect()
}

fn variant_filter(dir: &Path, module: &str, config: &Value) -> Option<Filter> {
    let path = dir.join(format!("{module}.wasm"));
    path.is_file().then(|| {
        Filter::wasm_file(
            module,
            &path,
            &config.to_string(),
            FailurePolicy::FailClosed,
        )
    })
}

fn variant_cases(f: &Fixtures, variants: &[(String, PathBuf)]) -> Vec<Case> {
    let mut out = Vec::new();
    for (label, dir) in variants {
        for name in VARIANT_CASES {
            let (module, config, what, native, target_a) = if *name == "palisade_chain" {
                let chain: Vec<Value> = suite_configs(f)
                    .into_iter()
                    .map(|(m, c)| json!({ m: c }))
                    .collect();
                (
                    "palisade",
                    json!({ "chain": chain }),
                    "palisade_chain, another build",
                    Some("native_chain"),
                    Some(1.5),
                )
            } else {
                let Some(p) = PLUGIN_CASES.iter().find(|p| p.name == *name) else {
                    continue;
                };
                let Some(config) = (p.config)(f) else {
                    continue;
                };
                (p.module, config, p.what, p.native, Some(1.2))
            };
            let setup = match variant_filter(dir, module, &config) {
                Some(filter) => Setup::Filters(vec![filter]),
                None => Setup::Unavailable(format!("{}/{module}.wasm missing", dir.display())),
            };
            out.push(Case {
                // The bench is one short-lived process: a few leaked names are its whole cost.
                name: Box::leak(format!("{name}@{label}").into_boxed_str()),
                kind: Kind::Plugin,
                what,
                setup,
                native,
                proof_stat: None,
                target_a,
            });
        }
    }
    out
}

/// The five policies on their allow paths, in the demo's order, with the bench configs.
pub fn suite_configs(f: &Fixtures) -> Vec<(&'static str, Value)> {
    vec![
        ("jwt_auth", jwt_auth_config(f, true)),
        ("rate_limit", rate_limit_config()),
        (
            "circuit_breaker",
            json!({"rules": [{"name": "bench", "key": {"constant": "bench"}}]}),
        ),
        (
            "bulkhead",
            json!({"rules": [{"name": "bench", "max_concurrent": 1_000_000}]}),
        ),
        ("transform", transform_config()),
    ]
}

/// The `palisade` chain module running [`suite_configs`].
pub fn palisade_filter(f: &Fixtures) -> Filter {
    let chain: Vec<Value> = suite_configs(f)
        .into_iter()
        .map(|(m, c)| json!({ m: c }))
        .collect();
    Filter::wasm("palisade", &json!({ "chain": chain }))
}

/// Every built module with a config, one filter each, for the startup and memory figures.
/// Returns the module names and the filters; modules without a config are listed separately.
pub fn all_modules_chain(f: &Fixtures) -> (Vec<&'static str>, Vec<Filter>, Vec<&'static str>) {
    let mut names = Vec::new();
    let mut filters = Vec::new();
    let mut skipped = Vec::new();
    if dist_module("probe").is_file() {
        names.push("probe");
        filters.push(floor_filter());
    }
    for p in PLUGIN_CASES {
        if names.contains(&p.module)
            || skipped.contains(&p.module)
            || !dist_module(p.module).is_file()
        {
            continue;
        }
        match (p.config)(f) {
            Some(config) => {
                names.push(p.module);
                filters.push(Filter::wasm(p.module, &config));
            }
            None => skipped.push(p.module),
        }
    }
    // A module whose first case has no config may still have one in a later case.
    skipped.retain(|m| !names.contains(m));
    (names, filters, skipped)
}

fn local_ratelimit() -> Filter {
    Filter::raw(
        r#"- name: envoy.filters.http.local_ratelimit
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
    stat_prefix: bench_local_ratelimit
    token_bucket: { max_tokens: 1000000000, tokens_per_fill: 1000000000, fill_interval: 1s }
    filter_enabled:
      runtime_key: bench_local_ratelimit_enabled
      default_value: { numerator: 100, denominator: HUNDRED }
    filter_enforced:
      runtime_key: bench_local_ratelimit_enforced
      default_value: { numerator: 100, denominator: HUNDRED }
"#,
    )
}

/// Three overwrites, one append, one removal, and a query parameter set: the operations the
/// `transform` case must mirror.
fn header_mutation() -> Filter {
    Filter::raw(
        r#"- name: envoy.filters.http.header_mutation
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
    mutations:
      request_mutations:
      - append: { header: { key: x-bench-set-1, value: one }, append_action: OVERWRITE_IF_EXISTS_OR_ADD }
      - append: { header: { key: x-bench-set-2, value: two }, append_action: OVERWRITE_IF_EXISTS_OR_ADD }
      - append: { header: { key: x-bench-set-3, value: three }, append_action: OVERWRITE_IF_EXISTS_OR_ADD }
      - append: { header: { key: x-bench-append, value: four }, append_action: APPEND_IF_EXISTS_OR_ADD }
      - remove: x-bench-remove
      query_parameter_mutations:
      - append: { record: { key: page, value: "1" }, action: OVERWRITE_IF_EXISTS_OR_ADD }
"#,
    )
}

fn jwt_authn(f: &Fixtures, cached: bool) -> Filter {
    let cache = if cached {
        "\n        jwt_cache_config: { jwt_cache_size: 100 }"
    } else {
        ""
    };
    jwt_authn_provider(f, f.jwks(), &format!("forward: true{cache}"))
}

fn jwt_authn_ec(f: &Fixtures, alg: EcAlg) -> Filter {
    jwt_authn_provider(
        f,
        f.jwks_ec(),
        &format!("from_headers: [{{ name: {} }}]", alg.header()),
    )
}

/// jwt_authn with one provider `bench` on every path; `extra` is the provider's last lines.
fn jwt_authn_provider(f: &Fixtures, jwks: &str, extra: &str) -> Filter {
    let jwks = Value::String(jwks.to_owned()).to_string();
    Filter::raw(&format!(
        r#"- name: envoy.filters.http.jwt_authn
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
    providers:
      bench:
        issuer: {issuer}
        audiences: [{audience}]
        local_jwks: {{ inline_string: {jwks} }}
        {extra}
    rules:
    - match: {{ prefix: / }}
      requires: {{ provider_name: bench }}
"#,
        issuer = f.issuer,
        audience = f.audience,
    ))
}

/// A reference case running the probe with `config` (the floor plus extra hostcalls).
fn probe_with(name: &'static str, what: &'static str, config: Value) -> Case {
    Case {
        name,
        kind: Kind::Reference,
        what,
        setup: if dist_module("probe").is_file() {
            Setup::Filters(vec![Filter::wasm("probe", &config)])
        } else {
            Setup::Unavailable("not built yet (dist/probe.wasm missing)".to_owned())
        },
        native: None,
        proof_stat: Some("wasmcustom.palisade.probe.requests"),
        target_a: None,
    }
}
