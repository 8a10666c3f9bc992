//! The RLS v3 service code (client and server) from a manual description: no protoc, no .proto
//! files; the messages are hand-written prost types (src/proto.rs) with the upstream field numbers.

fn service() -> tonic_build::manual::Service {
    tonic_build::manual::Service::builder()
        .name("RateLimitService")
        .package("envoy.service.ratelimit.v3")
        .method(
            tonic_build::manual::Method::builder()
                .name("should_rate_limit")
                .route_name("ShouldRateLimit")
                .input_type("crate::proto::RateLimitRequest")
                .output_type("crate::proto::RateLimitResponse")
                .codec_path("tonic_prost::ProstCodec")
                .build(),
        )
        .build()
}

fn main() {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    for (dir, client, server) in [("client", true, false), ("server", false, true)] {
        let dir = out.join(dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("cannot create {}: {e}", dir.display());
            std::process::exit(1);
        }
        tonic_build::manual::Builder::new()
            .build_client(client)
            .build_server(server)
            .build_transport(client)
            .out_dir(&dir)
            .compile(&[service()]);
    }
}
