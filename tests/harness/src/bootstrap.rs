//! Envoy bootstrap YAML, generated for tests or rendered from the shipped examples.

use crate::repo_root;
use std::fmt::Write as _;
use std::path::Path;

/// What a filter does when its Wasm VM fails (`failure_policy` in Envoy's PluginConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    FailClosed,
    FailOpen,
    /// Envoy ≥ 1.35: a failed VM is replaced (with backoff); counted in `wasm.<name>.vm_reload*`.
    FailReload,
}

/// One HTTP filter in the chain (the router is always appended last).
#[derive(Debug, Clone)]
pub struct Filter {
    yaml: String,
}

impl Filter {
    /// A Palisade Wasm plugin from `dist/<module>.wasm` with a JSON configuration, failing closed.
    pub fn wasm(module: &str, config: &serde_json::Value) -> Filter {
        Filter::wasm_raw(
            module,
            module,
            &config.to_string(),
            FailurePolicy::FailClosed,
        )
    }

    /// Full control: filter `name` (also the root id), module, raw configuration string.
    pub fn wasm_raw(name: &str, module: &str, config: &str, policy: FailurePolicy) -> Filter {
        Filter::wasm_file(name, &crate::wasm_module(module), config, policy)
    }

    /// A Wasm plugin from any `.wasm` file (the benchmark's build variants), as [`Filter::wasm_raw`].
    pub fn wasm_file(name: &str, path: &Path, config: &str, policy: FailurePolicy) -> Filter {
        let policy = match policy {
            FailurePolicy::FailClosed => "FAIL_CLOSED",
            FailurePolicy::FailOpen => "FAIL_OPEN",
            FailurePolicy::FailReload => "FAIL_RELOAD",
        };
        let yaml = format!(
            r#"- name: {name}
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
      name: {name}
      root_id: {name}
      failure_policy: {policy}
      vm_config:
        vm_id: ""
        runtime: envoy.wasm.runtime.v8
        code:
          local:
            filename: {path}
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: {config}
"#,
            path = yaml_str(&path.display().to_string()),
            config = yaml_str(config),
        );
        Filter { yaml }
    }

    /// Any other filter, given as the YAML list item (starting with `- name:`).
    pub fn raw(yaml: &str) -> Filter {
        Filter {
            yaml: yaml.to_owned(),
        }
    }
}

/// What a route does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Proxy to the upstream cluster `backend`.
    Backend,
    /// Answer directly, without an upstream.
    Direct { status: u16, body: String },
}

/// A route in the single virtual host.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub prefix: String,
    pub action: Action,
    /// Upstream timeout for backend routes; Envoy's default (15 s) if `None`.
    pub timeout_ms: Option<u64>,
}

impl Route {
    pub fn backend(name: &str, prefix: &str) -> Route {
        Route {
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            action: Action::Backend,
            timeout_ms: None,
        }
    }

    pub fn direct(name: &str, prefix: &str, status: u16, body: &str) -> Route {
        Route {
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            action: Action::Direct {
                status,
                body: body.to_owned(),
            },
            timeout_ms: None,
        }
    }

    pub fn timeout_ms(mut self, ms: u64) -> Route {
        self.timeout_ms = Some(ms);
        self
    }
}

/// A generated bootstrap: one listener (port chosen at run time), filters, routes, and a
/// `backend` cluster pointing at the upstream.
#[derive(Debug, Clone, Default)]
pub struct Bootstrap {
    filters: Vec<Filter>,
    routes: Vec<Route>,
    /// The upstream cluster's name (`backend` when unset).
    cluster: Option<String>,
    /// Further clusters, each a YAML list item at indentation 0.
    extra_clusters: Vec<String>,
    /// Extra top-level bootstrap YAML (`node:`, `stats_config:`), prepended.
    head: String,
}

impl Bootstrap {
    pub fn new() -> Self {
        Bootstrap::default()
    }

    pub fn filter(mut self, f: Filter) -> Self {
        self.filters.push(f);
        self
    }

    pub fn route(mut self, r: Route) -> Self {
        self.routes.push(r);
        self
    }

    /// Name the upstream cluster `name` instead of `backend` (routes follow), e.g. Istio's
    /// `inbound|8080||`.
    pub fn cluster_name(mut self, name: &str) -> Self {
        self.cluster = Some(name.to_owned());
        self
    }

    /// Add a cluster (a YAML list item at indentation 0, starting with `- name:`).
    pub fn extra_cluster(mut self, yaml: &str) -> Self {
        self.extra_clusters.push(yaml.to_owned());
        self
    }

    /// Add top-level bootstrap YAML (e.g. `node: {...}`), at indentation 0.
    pub fn head(mut self, yaml: &str) -> Self {
        self.head.push_str(yaml);
        if !yaml.ends_with('\n') {
            self.head.push('\n');
        }
        self
    }

    fn cluster(&self) -> &str {
        self.cluster.as_deref().unwrap_or("backend")
    }

    fn clusters(&self, upstream_port: u16) -> String {
        let mut out = clusters(self.cluster(), upstream_port);
        for c in &self.extra_clusters {
            out.push_str(&indent(c, 2));
        }
        out
    }

    /// Render with the `backend` cluster at `127.0.0.1:<upstream_port>` (use any port if the
    /// routes are all direct responses). The listener binds port 0; the harness discovers it.
    pub fn render(&self, upstream_port: u16) -> String {
        format!(
            "{head}{ADMIN}static_resources:\n  listeners:\n{listener}{clusters}",
            head = self.head,
            listener = indent(&self.listener(0), 2),
            clusters = self.clusters(upstream_port),
        )
    }

    /// Render for a listener delivered by file-based LDS, so a test can reload it
    /// ([`LdsFile`]): returns the bootstrap; write [`Bootstrap::lds_resources`] to the file.
    pub fn render_with_lds(&self, upstream_port: u16, lds: &LdsFile) -> String {
        format!(
            "node: {{ id: palisade-test, cluster: palisade-test }}\n{ADMIN}dynamic_resources:\n  lds_config:\n    resource_api_version: V3\n    path_config_source:\n      path: {path}\n      watched_directory: {{ path: {dir} }}\nstatic_resources:\n{clusters}",
            path = yaml_str(&lds.path().display().to_string()),
            dir = yaml_str(&lds.dir().display().to_string()),
            clusters = self.clusters(upstream_port),
        )
    }

    /// The LDS file contents for this bootstrap's listener on a fixed `port` (a reload must keep
    /// the port, so it cannot be 0 here).
    pub fn lds_resources(&self, port: u16) -> String {
        let listener = self.listener(port).replacen(
            "- name: main\n",
            "- \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n  name: main\n",
            1,
        );
        format!("resources:\n{listener}")
    }

    /// The listener as a YAML list item at indentation 0.
    fn listener(&self, port: u16) -> String {
        let mut routes = self.routes.clone();
        if routes.is_empty() {
            routes.push(Route::backend("default", "/"));
        }
        let mut y = String::new();
        let _ = write!(
            y,
            r#"- name: main
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {port} }}
  # Connections go to the worker with the fewest, not where the kernel's SO_REUSEPORT hash sends
  # them: a test's 8 connections reach both workers every time (by hash, all 8 land on one
  # worker in 1 run of 128), so the cross-worker assertions cannot flake.
  enable_reuse_port: false
  connection_balance_config: {{ exact_balance: {{}} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: ingress
        codec_type: AUTO
        route_config:
          name: local
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
"#
        );
        for r in &routes {
            let _ = writeln!(y, "            - name: {}", yaml_str(&r.name));
            let _ = writeln!(
                y,
                "              match: {{ prefix: {} }}",
                yaml_str(&r.prefix)
            );
            match &r.action {
                Action::Backend => {
                    let timeout = r
                        .timeout_ms
                        .map(|ms| format!(", timeout: {}s", ms as f64 / 1000.0))
                        .unwrap_or_default();
                    let _ = writeln!(
                        y,
                        "              route: {{ cluster: {}{timeout} }}",
                        yaml_str(self.cluster())
                    );
                }
                Action::Direct { status, body } => {
                    let _ = writeln!(
                        y,
                        "              direct_response: {{ status: {status}, body: {{ inline_string: {} }} }}",
                        yaml_str(body)
                    );
                }
            }
        }
        y.push_str("        http_filters:\n");
        for f in &self.filters {
            y.push_str(&indent(&f.yaml, 8));
        }
        y.push_str(
            r#"        - name: envoy.filters.http.router
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        );
        y
    }
}

const ADMIN: &str =
    "admin:\n  address:\n    socket_address: { address: 127.0.0.1, port_value: 0 }\n";

/// The `clusters:` section (under `static_resources:`) with the upstream cluster `name`.
fn clusters(name: &str, upstream_port: u16) -> String {
    let name = yaml_str(name);
    format!(
        r#"  clusters:
  - name: {name}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {upstream_port} }}
"#
    )
}

/// Indent every line of `text` by `n` spaces.
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// A file-based LDS source: write listener resources to it and Envoy picks them up (the write is
/// an atomic rename into a watched directory, which is what Envoy's file watcher needs).
pub struct LdsFile {
    dir: tempfile::TempDir,
}

impl LdsFile {
    pub fn new() -> LdsFile {
        LdsFile {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("lds.yaml")
    }

    /// Replace the LDS contents atomically.
    pub fn write(&self, resources: &str) {
        let tmp = self.dir.path().join("lds.yaml.tmp");
        std::fs::write(&tmp, resources).expect("write lds");
        std::fs::rename(&tmp, self.path()).expect("rename lds");
    }
}

impl Default for LdsFile {
    fn default() -> Self {
        LdsFile::new()
    }
}

/// A loopback port that was free a moment ago (for listeners that must keep their port across
/// reloads; everything else binds port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Render a shipped example (`envoy/<name>.yaml`) for a test: the conventional ports (listener
/// 10000, admin 9901) become 0 (chosen at run time), the upstream 8080 becomes `upstream_port`,
/// and `dist/` module paths become absolute.
pub fn render_example(file: &Path, upstream_port: u16) -> String {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let dist = format!("{}/dist/", repo_root().display());
    text.replace("port_value: 10000", "port_value: 0")
        .replace("port_value: 9901", "port_value: 0")
        .replace("port_value: 8080", &format!("port_value: {upstream_port}"))
        .replace("filename: dist/", &format!("filename: {dist}"))
}

/// As [`render_example`], with the rate limit service of the examples' `rls` cluster
/// (`port_value: 8081`) on `rls_port`.
pub fn render_example_with_rls(file: &Path, upstream_port: u16, rls_port: u16) -> String {
    render_example(file, upstream_port)
        .replace("port_value: 8081", &format!("port_value: {rls_port}"))
}

/// A double-quoted YAML scalar (JSON string syntax is valid YAML).
fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}
