#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use serde_json::json;

fn grpc_cluster(name: &str) -> Value {
    json!({"name": name, "typed_extension_protocol_options": {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}})
}

fn bootstrap(clusters: Vec<Value>) -> Value {
    json!({"static_resources": {"listeners": [], "clusters": clusters}})
}

fn checked(module: &str, config: Value, doc: &Value) -> Result<(), ClusterError> {
    let clusters = static_clusters(doc).expect("a static bootstrap");
    check(&references(module, &config), &clusters)
}

#[test]
fn every_field_that_names_a_cluster_is_found_with_its_path_in_a_chain_too() {
    let rate_limit = json!({"rules": [
        {"name": "a"},
        {"name": "b", "global": {"cluster": "rls"}}]});
    let jwt_auth = json!({"providers": [
        {"jwks": {"inline": {}}},
        {"jwks": {"remote": {"cluster": "idp", "uri": "https://idp/jwks"}}}]});
    let bulkhead = json!({"rules": [{"name": "x", "cluster": "backend"}, {"name": "y"}]});
    assert_eq!(
        references("rate_limit", &rate_limit),
        vec![ClusterRef {
            field: "rules[1].global.cluster".into(),
            cluster: "rls".into(),
            grpc: true
        }]
    );
    let chain = json!({"chain": [
        {"jwt_auth": jwt_auth}, {"rate_limit": rate_limit}, {"bulkhead": bulkhead},
        {"transform": {"rules": []}}]});
    let fields: Vec<(String, String, bool)> = references("palisade", &chain)
        .into_iter()
        .map(|r| (r.field, r.cluster, r.grpc))
        .collect();
    assert_eq!(
        fields,
        vec![
            (
                "chain[0].jwt_auth.providers[1].jwks.remote.cluster".into(),
                "idp".into(),
                false
            ),
            (
                "chain[1].rate_limit.rules[1].global.cluster".into(),
                "rls".into(),
                true
            ),
            (
                "chain[2].bulkhead.rules[0].cluster".into(),
                "backend".into(),
                false
            ),
        ]
    );
    assert!(references("transform", &json!({"rules": []})).is_empty());
}

#[test]
fn a_name_that_is_not_a_static_cluster_is_refused_with_the_known_names() {
    let doc = bootstrap(vec![json!({"name": "backend"}), grpc_cluster("rls")]);
    let config = json!({"rules": [{"global": {"cluster": "rsl"}}]});
    let e = checked("rate_limit", config, &doc).unwrap_err();
    assert_eq!(e.field, "rules[0].global.cluster");
    assert_eq!(
        e.message,
        "config field `rules[0].global.cluster`: invalid value \"rsl\": no such cluster in this \
         bootstrap's static_resources (its clusters: backend, rls)"
    );
    let e = checked(
        "bulkhead",
        json!({"rules": [{"cluster": "backend"}, {"cluster": "nope"}]}),
        &doc,
    )
    .unwrap_err();
    assert_eq!(e.field, "rules[1].cluster");
    let e = checked(
        "jwt_auth",
        json!({"providers": [{"jwks": {"remote": {"cluster": "idp"}}}]}),
        &bootstrap(vec![]),
    )
    .unwrap_err();
    assert!(e.message.ends_with("(it has none)"), "{}", e.message);
}

#[test]
fn a_rate_limit_service_cluster_must_speak_http2_and_others_need_not() {
    let doc = bootstrap(vec![json!({"name": "plain"})]);
    let e = checked(
        "rate_limit",
        json!({"rules": [{"global": {"cluster": "plain"}}]}),
        &doc,
    )
    .unwrap_err();
    assert!(e.message.contains("speaks HTTP/1.1"), "{}", e.message);
    // A JWKS fetch and a bulkhead match work over any protocol.
    checked(
        "jwt_auth",
        json!({"providers": [{"jwks": {"remote": {"cluster": "plain"}}}]}),
        &doc,
    )
    .unwrap();
    checked("bulkhead", json!({"rules": [{"cluster": "plain"}]}), &doc).unwrap();
    // Every way of letting Envoy use HTTP/2.
    let options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    for cluster in [
        grpc_cluster("rls"),
        json!({"name": "rls", "http2_protocol_options": {}}),
        json!({"name": "rls", "typed_extension_protocol_options": {options: {"auto_config": {}}}}),
        json!({"name": "rls", "typed_extension_protocol_options": {options: {"use_downstream_protocol_config": {}}}}),
    ] {
        let config = json!({"rules": [{"global": {"cluster": "rls"}}]});
        checked("rate_limit", config, &bootstrap(vec![cluster.clone()]))
            .unwrap_or_else(|e| panic!("{cluster}: {}", e.message));
    }
}

#[test]
fn nothing_is_said_where_the_clusters_are_not_all_known() {
    // Not a bootstrap (an LDS file, a WasmPlugin), or clusters from CDS.
    assert!(static_clusters(&json!({"resources": []})).is_none());
    assert!(static_clusters(&json!({"kind": "WasmPlugin"})).is_none());
    let with_cds = json!({"static_resources": {"clusters": []},
        "dynamic_resources": {"cds_config": {"ads": {}}}});
    assert!(static_clusters(&with_cds).is_none());
    let with_locator = json!({"static_resources": {},
        "dynamic_resources": {"cds_resources_locator": "xdstp://x"}});
    assert!(static_clusters(&with_locator).is_none());
    // LDS from xDS alone does not hide clusters; no clusters at all is an empty list.
    let lds_only = json!({"static_resources": {}, "dynamic_resources": {"lds_config": {}}});
    assert_eq!(static_clusters(&lds_only).unwrap().len(), 0);
}
