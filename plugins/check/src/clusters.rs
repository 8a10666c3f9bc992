//! The clusters a Palisade config names, checked against the bootstrap that holds it.
//!
//! Three fields name Envoy clusters: rate_limit's `global.cluster` (the rate limit service, over
//! gRPC), jwt_auth's `jwks.remote.cluster` (the JWKS fetch) and bulkhead's rule `cluster` (a match
//! on the route's upstream). The modules cannot check them: a cluster is Envoy's, and a
//! misspelled name only shows at run time — a global rule that always takes its `on_error` path,
//! a key set never fetched, a bulkhead rule that never matches — with the config reported valid.
//! In a bootstrap whose clusters are all static (no CDS), the checker knows every cluster, so it
//! can say so before Envoy starts: a name that is not one of them, and a rate limit service
//! cluster without HTTP/2 (gRPC needs it; over HTTP/1.1 every call fails).

use serde_json::Value;

/// A cluster named by a config.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRef {
    /// The field's path in the module's config (`chain[1].rate_limit.rules[0].global.cluster`).
    pub field: String,
    pub cluster: String,
    /// Called over gRPC (needs HTTP/2).
    pub grpc: bool,
}

/// A cluster reference the bootstrap cannot serve.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterError {
    pub field: String,
    pub message: String,
}

/// Every cluster `config` (of module `module`; `palisade` for the chain) names.
pub fn references(module: &str, config: &Value) -> Vec<ClusterRef> {
    let mut out = Vec::new();
    collect(module, config, "", &mut out);
    out
}

fn collect(module: &str, config: &Value, prefix: &str, out: &mut Vec<ClusterRef>) {
    let items = |key: &str| {
        config
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
    };
    let mut push = |field: String, v: Option<&Value>, grpc: bool| {
        if let Some(cluster) = v.and_then(Value::as_str) {
            out.push(ClusterRef {
                field: format!("{prefix}{field}"),
                cluster: cluster.to_owned(),
                grpc,
            });
        }
    };
    match module {
        "palisade" => {
            for (i, entry) in items("chain") {
                if let Some((name, inner)) = entry.as_object().and_then(|o| o.iter().next()) {
                    collect(name, inner, &format!("{prefix}chain[{i}].{name}."), out);
                }
            }
        }
        "rate_limit" => {
            for (i, rule) in items("rules") {
                let field = format!("rules[{i}].global.cluster");
                push(field, rule.pointer("/global/cluster"), true);
            }
        }
        "jwt_auth" => {
            for (i, provider) in items("providers") {
                let field = format!("providers[{i}].jwks.remote.cluster");
                push(field, provider.pointer("/jwks/remote/cluster"), false);
            }
        }
        "bulkhead" => {
            for (i, rule) in items("rules") {
                push(format!("rules[{i}].cluster"), rule.get("cluster"), false);
            }
        }
        _ => {}
    }
}

/// The clusters of a bootstrap document when it defines them all: `static_resources.clusters`
/// and no CDS. `None` when the document is not a bootstrap (an LDS file, a WasmPlugin) or takes
/// clusters from xDS: then nothing can be said about a name.
pub fn static_clusters(doc: &Value) -> Option<Vec<&Value>> {
    let statics = doc.get("static_resources")?;
    let dynamic = doc.get("dynamic_resources");
    if ["cds_config", "cds_resources_locator"]
        .iter()
        .any(|k| dynamic.and_then(|d| d.get(k)).is_some())
    {
        return None;
    }
    Some(
        statics
            .get("clusters")
            .and_then(Value::as_array)
            .map(|c| c.iter().collect())
            .unwrap_or_default(),
    )
}

/// The first reference `clusters` cannot serve, in the config's order.
pub fn check(refs: &[ClusterRef], clusters: &[&Value]) -> Result<(), ClusterError> {
    for r in refs {
        let invalid = |reason: String| ClusterError {
            field: r.field.clone(),
            message: format!(
                "config field `{}`: invalid value {}: {reason}",
                r.field,
                Value::String(r.cluster.clone())
            ),
        };
        let Some(cluster) = clusters
            .iter()
            .find(|c| cluster_name(c) == Some(r.cluster.as_str()))
        else {
            let mut names: Vec<&str> = clusters.iter().filter_map(|c| cluster_name(c)).collect();
            names.sort_unstable();
            let known = if names.is_empty() {
                "it has none".to_owned()
            } else {
                format!("its clusters: {}", names.join(", "))
            };
            return Err(invalid(format!(
                "no such cluster in this bootstrap's static_resources ({known})"
            )));
        };
        if r.grpc && !speaks_http2(cluster) {
            return Err(invalid(
                "the cluster speaks HTTP/1.1, and a rate limit service is called over gRPC: give it \
                 HTTP/2 (typed_extension_protocol_options: envoy.extensions.upstreams.http.v3.HttpProtocolOptions \
                 with explicit_http_config: {http2_protocol_options: {}})"
                    .to_owned(),
            ));
        }
    }
    Ok(())
}

fn cluster_name(cluster: &Value) -> Option<&str> {
    cluster.get("name").and_then(Value::as_str)
}

/// Whether Envoy may use HTTP/2 to the cluster: explicitly, by the deprecated top-level field,
/// or by a protocol choice made at connection time (`auto_config`, the downstream's protocol).
fn speaks_http2(cluster: &Value) -> bool {
    const OPTIONS: &str =
        "/typed_extension_protocol_options/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    if cluster.get("http2_protocol_options").is_some() {
        return true;
    }
    cluster.pointer(OPTIONS).is_some_and(|o| {
        o.pointer("/explicit_http_config/http2_protocol_options")
            .is_some()
            || o.get("auto_config").is_some()
            || o.get("use_downstream_protocol_config").is_some()
    })
}

#[cfg(test)]
mod tests;
