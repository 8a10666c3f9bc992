//! Envoy configured as istiod and istio-agent configure it for WasmPlugins, without a control
//! plane: file-based ECDS.
//!
//! For each WasmPlugin (in istiod's order: phase, then priority), the listener's HTTP filter chain
//! gets an HTTP filter with Istio's name and a `config_discovery` source reading one file; the file
//! holds the `TypedExtensionConfig` istiod would send (after istio-agent rewrote the code to a
//! local file): `envoy.extensions.filters.http.wasm.v3.Wasm` with `config.name` `<ns>.<name>`,
//! `root_id` = `pluginName`, no `vm_id`, V8, `configuration` = the `pluginConfig` JSON as a
//! protobuf Struct prints it (none when unset), and `failure_policy` from `failStrategy`.
//! [`IstioProxy::deliver`] replaces a file atomically (write, then rename into the watched
//! directory), as a new push from istiod would; [`IstioProxy::deliver_fetch_failure`] puts in the
//! RBAC filter istio-agent substitutes when it cannot fetch the module.

use super::WasmPlugin;
use crate::bootstrap::{Bootstrap, Filter, Route};
use std::path::{Path, PathBuf};

pub const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
pub const RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";

/// How istiod names the filter and the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Istio <= 1.29: `extensions.istio.io/wasmplugin/<ns>.<name>`, plugin `<ns>.<name>`.
    WasmPlugin,
    /// Istio 1.30+: `extensions.istio.io/trafficextension/<ns>.<name>~istio-translated-wasmplugin`,
    /// the plugin name with the same suffix.
    TrafficExtension,
}

const TRANSLATED: &str = "~istio-translated-wasmplugin";

impl Form {
    pub fn filter_name(self, p: &WasmPlugin) -> String {
        match self {
            Form::WasmPlugin => format!("extensions.istio.io/wasmplugin/{}", p.resource_name()),
            Form::TrafficExtension => format!(
                "extensions.istio.io/trafficextension/{}{TRANSLATED}",
                p.resource_name()
            ),
        }
    }

    /// `PluginConfig.name`.
    pub fn plugin_config_name(self, p: &WasmPlugin) -> String {
        match self {
            Form::WasmPlugin => p.resource_name(),
            Form::TrafficExtension => format!("{}{TRANSLATED}", p.resource_name()),
        }
    }
}

/// Where the module's code comes from.
#[derive(Debug, Clone)]
pub enum Code {
    /// A local file (what istio-agent writes after fetching an `oci://` or `http(s)://` module).
    Local(PathBuf),
    /// `vm_config.code.remote`: Envoy fetches `uri` through the bootstrap's `cluster` and checks
    /// the sha256 (hex).
    Remote {
        uri: String,
        cluster: String,
        sha256: String,
    },
}

/// The ECDS side of a proxy: one file per plugin in a watched directory.
pub struct IstioProxy {
    pub form: Form,
    /// The plugins in filter-chain order.
    pub plugins: Vec<WasmPlugin>,
    dir: tempfile::TempDir,
}

impl IstioProxy {
    /// Deliver `plugins` (in istiod's order) with their own configuration and the module from
    /// `dist/`.
    pub fn new(form: Form, mut plugins: Vec<WasmPlugin>) -> IstioProxy {
        plugins.sort_by_key(WasmPlugin::order_key);
        let proxy = IstioProxy {
            form,
            plugins,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for p in &proxy.plugins {
            proxy.deliver(p);
        }
        proxy
    }

    /// The directory Envoy watches.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn index_of(&self, p: &WasmPlugin) -> usize {
        self.plugins
            .iter()
            .position(|q| q.resource_name() == p.resource_name())
            .unwrap_or_else(|| panic!("{} is not one of this proxy's plugins", p.resource_name()))
    }

    fn file(&self, p: &WasmPlugin) -> PathBuf {
        self.dir
            .path()
            .join(format!("ecds-{}.yaml", self.index_of(p)))
    }

    /// Istio's name of `p`'s HTTP filter.
    pub fn filter_name(&self, p: &WasmPlugin) -> String {
        self.form.filter_name(p)
    }

    /// Envoy's stat `extension_config_discovery.http_filter.<filter>.<suffix>`.
    pub fn ecds_stat(&self, p: &WasmPlugin, suffix: &str) -> String {
        format!(
            "extension_config_discovery.http_filter.{}.{suffix}",
            self.filter_name(p)
        )
    }

    /// A bootstrap for these plugins: `node` set (ECDS needs it), Istio's stats config (no
    /// default tag extraction), the upstream cluster named `cluster`, and `extra_clusters`.
    pub fn bootstrap(
        &self,
        cluster: &str,
        extra_clusters: &[String],
        upstream_port: u16,
    ) -> String {
        self.bootstrap_with_stats(cluster, extra_clusters, upstream_port, false)
    }

    /// [`IstioProxy::bootstrap`], and with `palisade_tags` Palisade's stats tags
    /// (`deploy/observability/envoy-stats-config.yaml`) merged into Istio's stats config, as a
    /// `sidecar.istio.io/bootstrapOverride` does (docs/operators.md): Istio's
    /// `use_all_default_tags: false` stays.
    pub fn bootstrap_with_stats(
        &self,
        cluster: &str,
        extra_clusters: &[String],
        upstream_port: u16,
        palisade_tags: bool,
    ) -> String {
        let stats_tags = if palisade_tags {
            let path = crate::repo_root().join("deploy/observability/envoy-stats-config.yaml");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let docs =
                super::yaml::documents(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let tags = docs
                .first()
                .and_then(|d| d.pointer("/stats_config/stats_tags"))
                .cloned()
                .unwrap_or_else(|| panic!("{} has no stats_config.stats_tags", path.display()));
            format!(", stats_tags: {tags}")
        } else {
            String::new()
        };
        let mut b = Bootstrap::new()
            .head(&format!("node: {{ id: sidecar~127.0.0.1~backend-0.shop~shop.svc.cluster.local, cluster: backend.shop }}\nstats_config: {{ use_all_default_tags: false{stats_tags} }}\n"))
            .cluster_name(cluster)
            .route(Route::backend("default", "/"));
        for c in extra_clusters {
            b = b.extra_cluster(c);
        }
        for p in &self.plugins {
            b = b.filter(Filter::raw(&self.http_filter(p)));
        }
        b.render(upstream_port)
    }

    fn http_filter(&self, p: &WasmPlugin) -> String {
        format!(
            "- name: {name}\n  config_discovery:\n    config_source:\n      path_config_source:\n        path: {path}\n        watched_directory: {{ path: {dir} }}\n      initial_fetch_timeout: 0s\n      resource_api_version: V3\n    type_urls: [\"{WASM_TYPE}\", \"{RBAC_TYPE}\"]\n",
            name = q(&self.filter_name(p)),
            path = q(&self.file(p).display().to_string()),
            dir = q(&self.dir.path().display().to_string()),
        )
    }

    /// Deliver `p` as istiod would: its own configuration, the module from `dist/`.
    pub fn deliver(&self, p: &WasmPlugin) {
        let code = Code::Local(crate::wasm_module(&p.module));
        self.deliver_with(p, Some(&p.configuration()), &code);
    }

    /// Deliver `p` with a raw `configuration` (`None`: no configuration at all) and `code`.
    pub fn deliver_with(&self, p: &WasmPlugin, configuration: Option<&str>, code: &Code) {
        let code = match code {
            Code::Local(path) => format!(
                "{{ local: {{ filename: {} }} }}",
                q(&path.display().to_string())
            ),
            Code::Remote {
                uri,
                cluster,
                sha256,
            } => format!(
                "{{ remote: {{ http_uri: {{ uri: {}, cluster: {}, timeout: 10s }}, sha256: {} }} }}",
                q(uri),
                q(cluster),
                q(sha256)
            ),
        };
        let configuration = match configuration {
            Some(c) if !c.is_empty() => format!(
                "      configuration:\n        \"@type\": type.googleapis.com/google.protobuf.StringValue\n        value: {}\n",
                q(c)
            ),
            _ => String::new(),
        };
        let typed_config = format!(
            "    \"@type\": {WASM_TYPE}\n    config:\n      name: {name}\n      root_id: {root}\n      vm_config:\n        runtime: envoy.wasm.runtime.v8\n        code: {code}\n{configuration}      failure_policy: {policy}\n",
            name = q(&self.form.plugin_config_name(p)),
            root = q(&p.plugin_name()),
            policy = p.failure_policy(),
        );
        self.write(p, &typed_config);
    }

    /// What istio-agent puts in the filter's place when it cannot fetch the module: an RBAC
    /// filter that denies everything (`FAIL_CLOSE`, 403) or allows everything (`FAIL_OPEN`).
    pub fn deliver_fetch_failure(&self, p: &WasmPlugin) {
        let typed_config = if p.fail_open() {
            format!("    \"@type\": {RBAC_TYPE}\n")
        } else {
            format!(
                "    \"@type\": {RBAC_TYPE}\n    rules:\n      action: DENY\n      policies:\n        deny-all:\n          permissions: [{{ any: true }}]\n          principals: [{{ any: true }}]\n"
            )
        };
        self.write(p, &typed_config);
    }

    /// Replace `p`'s file atomically (write, then rename into the watched directory).
    fn write(&self, p: &WasmPlugin, typed_config: &str) {
        let text = format!(
            "resources:\n- \"@type\": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig\n  name: {name}\n  typed_config:\n{typed_config}",
            name = q(&self.filter_name(p)),
            typed_config = typed_config
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>(),
        );
        let target = self.file(p);
        let tmp = self.dir.path().join(format!(".tmp-{}", self.index_of(p)));
        std::fs::write(&tmp, text).expect("write ECDS file");
        std::fs::rename(&tmp, &target).expect("rename ECDS file");
    }
}

/// A double-quoted YAML scalar.
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A plain-HTTP file server on loopback, for `vm_config.code.remote` (a WasmPlugin `url:
/// http://...`): answers `GET <path>` with the file's bytes, anything else 404; counts requests.
pub struct StaticServer {
    port: u16,
    hits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl StaticServer {
    /// Serve on a free loopback port.
    pub fn start(files: Vec<(String, Vec<u8>)>) -> StaticServer {
        StaticServer::start_on("127.0.0.1:0", files).expect("bind a loopback port")
    }

    /// Serve on `addr` (`make serve-wasm`: `127.0.0.1:<WASM_HTTP_PORT>`).
    pub fn start_on(addr: &str, files: Vec<(String, Vec<u8>)>) -> std::io::Result<StaticServer> {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind(addr)?;
        let port = listener.local_addr()?.port();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = std::sync::Arc::clone(&hits);
        let files: std::collections::BTreeMap<String, Vec<u8>> = files.into_iter().collect();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head = String::from_utf8_lossy(&buf);
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let (status, body): (&str, &[u8]) = match files.get(&path) {
                    Some(b) => ("200 OK", b),
                    None => ("404 Not Found", b"not found\n"),
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\ncontent-type: application/wasm\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(body);
            }
        });
        Ok(StaticServer { port, hits })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Requests answered so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A static cluster `name` pointing at this server.
    pub fn cluster(&self, name: &str) -> String {
        format!(
            "- name: {n}\n  type: STATIC\n  connect_timeout: 1s\n  load_assignment:\n    cluster_name: {n}\n    endpoints:\n    - lb_endpoints:\n      - endpoint:\n          address:\n            socket_address: {{ address: 127.0.0.1, port_value: {port} }}\n",
            n = q(name),
            port = self.port
        )
    }
}
