//! The Wasm images of `make images` in a real registry (Docker tier, `make e2e-docker`): pushed to
//! Debian's `docker-registry` on loopback, read back with `skopeo`, and checked against what
//! Istio's fetcher (istio/istio `pkg/wasm/imagefetcher.go`) requires, and against the digests
//! `deploy/istio` pins. In `mod docker_only`: the native tiers skip it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod docker_only {
    use palisade_harness::istio::oci::{self, sha256_hex, OciImage};
    use palisade_harness::istio::registry::{push_layout, skopeo, Registry};
    use palisade_harness::istio::{self, WasmPlugin};
    use palisade_harness::wasm_module;
    use serde_json::Value;
    use std::collections::BTreeMap;
    use std::process::Command;

    fn env(name: &str) -> String {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                panic!("{name} is not set: run the Docker tier with `make e2e-docker`")
            })
    }

    #[test]
    #[ignore = "docker: run by `make e2e-docker`"]
    fn every_wasm_image_pushed_to_a_registry_reads_back_as_istio_needs_it_at_the_pinned_digest() {
        let version = env("PALISADE_IMAGE_VERSION");
        let modules: Vec<String> = env("PALISADE_WASM_IMAGES")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            modules.len(),
            6,
            "the five policies and the chain: {modules:?}"
        );
        let registry = Registry::start().unwrap_or_else(|e| panic!("{e}"));
        let work = tempfile::tempdir().unwrap();
        let mut digests = BTreeMap::new();
        for m in &modules {
            let image = format!("palisade/{m}-wasm:{version}");
            let oci = OciImage::from_docker(&image).unwrap_or_else(|e| panic!("{e}"));
            // The layout is the built image: its config blob is the one the engine's image id names.
            let id = String::from_utf8(
                Command::new("docker")
                    .args(["image", "inspect", "--format", "{{.Id}}", &image])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap();
            assert_eq!(
                id.trim(),
                format!("sha256:{}", sha256_hex(&oci.config)),
                "{image}"
            );

            let layout = work.path().join(format!("{m}-wasm"));
            oci.write_layout(&layout, &version).unwrap();
            let dest = format!("{}/palisade/{m}-wasm:{version}", registry.addr());
            push_layout(&layout, &version, &dest)
                .unwrap_or_else(|e| panic!("{e}\n{}", registry.log()));

            // Read back with skopeo: the manifest bytes and their digest.
            let docker_ref = format!("docker://{dest}");
            let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &docker_ref]).unwrap();
            let digest = sha256_hex(&raw);
            assert_eq!(
                digest,
                oci.digest(),
                "{m}: the registry serves another manifest than pushed"
            );
            let inspect: Value = serde_json::from_slice(
                &skopeo(&["inspect", "--tls-verify=false", &docker_ref]).unwrap(),
            )
            .unwrap();
            assert_eq!(inspect["Digest"], format!("sha256:{digest}"), "{m}");

            // One single-platform image manifest (an index would resolve per platform).
            let manifest: Value = serde_json::from_slice(&raw).unwrap();
            assert_eq!(
                manifest["mediaType"],
                oci::MANIFEST_MEDIA_TYPE,
                "{m}: {manifest}"
            );
            assert!(
                manifest.get("manifests").is_none(),
                "{m}: an index, not a manifest"
            );
            let config: Value = serde_json::from_slice(
                &skopeo(&["inspect", "--config", "--tls-verify=false", &docker_ref]).unwrap(),
            )
            .unwrap();
            assert_eq!(
                (config["os"].as_str(), config["architecture"].as_str()),
                (Some("linux"), Some("amd64")),
                "{m}"
            );

            // The last layer: a gzip tar whose plugin.wasm is dist/<module>.wasm, byte for byte.
            let layers = manifest["layers"].as_array().unwrap();
            let last = layers.last().unwrap();
            assert_eq!(last["mediaType"], oci::LAYER_MEDIA_TYPE, "{m}");
            let copy = work.path().join(format!("{m}-readback"));
            skopeo(&[
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                &docker_ref,
                &format!("dir:{}", copy.display()),
            ])
            .unwrap();
            let blob_hex = last["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:");
            let blob = std::fs::read(copy.join(blob_hex)).unwrap();
            assert_eq!(sha256_hex(&blob), blob_hex, "{m}: layer blob digest");
            assert_eq!(&blob[..2], &[0x1f, 0x8b], "{m}: the layer is not gzip");
            let wasm = oci::file_in_gzip_layer(&blob, "plugin.wasm")
                .unwrap_or_else(|e| panic!("{m}: {e}"));
            assert!(wasm.starts_with(b"\0asm"), "{m}: plugin.wasm is not Wasm");
            assert!(
                wasm == std::fs::read(wasm_module(m)).unwrap(),
                "{m}: plugin.wasm in the registry differs from dist/{m}.wasm"
            );
            eprintln!(
                "{dest}: sha256:{digest}, {} layer(s), plugin.wasm {} bytes",
                layers.len(),
                wasm.len()
            );
            digests.insert(m.clone(), digest);
        }
        // The digests deploy/istio pins are the ones the registry serves.
        let plugins: Vec<WasmPlugin> = istio::manifest_files()
            .iter()
            .flat_map(|f| WasmPlugin::load_file(f).unwrap())
            .collect();
        let mismatches = istio::digest_mismatches(&plugins, &digests);
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }
}
