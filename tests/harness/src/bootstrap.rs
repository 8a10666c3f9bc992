//! Envoy bootstrap YAML, generated for tests or rendered from the shipped examples.

use crate::repo_root;
use std::fmt::Write as _;
use std::path::Path;

/// What a filter does when its Wasm VM fails (`failure_policy` in Envoy's PluginConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    FailClosed,
    FailOpen,
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
        let path = crate::wasm_module(module);
        let policy = match policy {
            FailurePolicy::FailClosed => "FAIL_CLOSED",
            FailurePolicy::FailOpen => "FAIL_OPEN",
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

    /// Render with the `backend` cluster at `127.0.0.1:<upstream_port>` (use any port if the
    /// routes are all direct responses).
    pub fn render(&self, upstream_port: u16) -> String {
        let mut routes = self.routes.clone();
        if routes.is_empty() {
            routes.push(Route::backend("default", "/"));
        }
        let mut y = String::new();
        y.push_str(
            r#"admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 0 }
static_resources:
  listeners:
  - name: main
    address:
      socket_address: { address: 127.0.0.1, port_value: 0 }
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
"#,
        );
        for r in &routes {
            let _ = writeln!(y, "              - name: {}", yaml_str(&r.name));
            let _ = writeln!(
                y,
                "                match: {{ prefix: {} }}",
                yaml_str(&r.prefix)
            );
            match &r.action {
                Action::Backend => {
                    let timeout = r
                        .timeout_ms
                        .map(|ms| format!(", timeout: {}s", ms as f64 / 1000.0))
                        .unwrap_or_default();
                    let _ = writeln!(y, "                route: {{ cluster: backend{timeout} }}");
                }
                Action::Direct { status, body } => {
                    let _ = writeln!(
                        y,
                        "                direct_response: {{ status: {status}, body: {{ inline_string: {} }} }}",
                        yaml_str(body)
                    );
                }
            }
        }
        y.push_str("          http_filters:\n");
        for f in &self.filters {
            for line in f.yaml.lines() {
                let _ = writeln!(y, "          {line}");
            }
        }
        y.push_str(
            r#"          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: UPSTREAM_PORT }
"#,
        );
        y.replace("UPSTREAM_PORT", &upstream_port.to_string())
    }
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

/// A double-quoted YAML scalar (JSON string syntax is valid YAML).
fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}
