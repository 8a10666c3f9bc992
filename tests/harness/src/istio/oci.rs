//! The Wasm images of `make images`, built reproducibly, and as OCI image layouts with a manifest
//! digest that does not depend on the registry they are pushed to.
//!
//! [`OciImage::for_wasm`] builds a module's image from `dist/<module>.wasm` alone: one layer, a tar
//! holding `plugin.wasm` with fixed owner, mode and mtime, and a config with a fixed creation
//! time, so the same module always gives the same image id and the same digest (a `docker build`
//! stamps the build time into the config and the copy time into the layer: every build would get
//! a new digest and the pins in `deploy/istio` could never hold). `make images` loads it into
//! Docker ([`OciImage::docker_archive`], `docker load`).
//!
//! `docker push` compresses a layer itself, so the digest of what it pushes depends on the Docker
//! version. Instead the image is taken as Docker holds it (`docker save`: its config blob, whose
//! sha256 is the image id, and its one uncompressed layer, whose sha256 is the image's
//! `rootfs.diff_ids[0]`), the layer is gzip-compressed here (no name, no mtime: the same bytes every
//! time), and an OCI image manifest is written around them. `skopeo copy oci:<layout> docker://<registry>/...` pushes those
//! bytes unchanged, so the manifest digest computed here is the one a registry serves, the one Istio
//! checks `sha256` against, and the one `deploy/istio` pins ([`pin_manifests`]).
//!
//! The shape is the one Istio's fetcher (istio/istio `pkg/wasm/imagefetcher.go`) takes: an OCI image
//! manifest (not an index) whose last layer is `application/vnd.oci.image.layer.v1.tar+gzip`,
//! holding `plugin.wasm`.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One Wasm image as an OCI image: manifest, config and layer blobs.
#[derive(Debug, Clone)]
pub struct OciImage {
    /// The image manifest, exactly the bytes a registry will serve.
    pub manifest: Vec<u8>,
    /// The image config (Docker's, unchanged: its digest is the local image id).
    pub config: Vec<u8>,
    /// The one layer, gzip-compressed.
    pub layer: Vec<u8>,
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl OciImage {
    /// The image `image` (e.g. `palisade/rate_limit-wasm:0.1.0`) from the local Docker engine.
    pub fn from_docker(image: &str) -> Result<OciImage, String> {
        let out = Command::new("docker")
            .args(["save", image])
            .output()
            .map_err(|e| format!("docker save {image}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "docker save {image} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        OciImage::from_docker_archive(&out.stdout).map_err(|e| format!("{image}: {e}"))
    }

    /// From the bytes of a `docker save` archive holding one image of one layer.
    pub fn from_docker_archive(archive: &[u8]) -> Result<OciImage, String> {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut tar = tar::Archive::new(archive);
        for entry in tar
            .entries()
            .map_err(|e| format!("docker save archive: {e}"))?
        {
            let mut entry = entry.map_err(|e| format!("docker save archive: {e}"))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry
                .path()
                .map_err(|e| format!("docker save archive: {e}"))?
                .display()
                .to_string();
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| format!("docker save archive {path}: {e}"))?;
            files.insert(path, bytes);
        }
        let manifest: serde_json::Value = serde_json::from_slice(
            files
                .get("manifest.json")
                .ok_or("docker save archive has no manifest.json")?,
        )
        .map_err(|e| format!("docker save manifest.json: {e}"))?;
        let entry = match manifest.as_array().map(Vec::as_slice) {
            Some([one]) => one,
            _ => return Err("docker save archive must hold exactly one image".to_owned()),
        };
        let config_name = entry["Config"].as_str().ok_or("manifest.json: no Config")?;
        let layers: Vec<&str> = entry["Layers"]
            .as_array()
            .ok_or("manifest.json: no Layers")?
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect();
        let [layer_name] = layers.as_slice() else {
            return Err(format!(
                "a Wasm image has exactly one layer; this one has {}",
                layers.len()
            ));
        };
        let config = files
            .get(config_name)
            .ok_or_else(|| format!("docker save archive has no {config_name}"))?
            .clone();
        let layer_tar = files
            .get(*layer_name)
            .ok_or_else(|| format!("docker save archive has no {layer_name}"))?;
        // The layer must be the one the config names (it is, unless the archive is corrupt).
        let config_json: serde_json::Value =
            serde_json::from_slice(&config).map_err(|e| format!("image config: {e}"))?;
        let diff_id = format!("sha256:{}", sha256_hex(layer_tar));
        if config_json
            .pointer("/rootfs/diff_ids/0")
            .and_then(|v| v.as_str())
            != Some(&diff_id)
        {
            return Err(format!(
                "layer {layer_name} ({diff_id}) is not the image config's rootfs.diff_ids[0]"
            ));
        }
        Ok(OciImage::from_parts(config, layer_tar))
    }

    /// The image of a Wasm module: `/plugin.wasm` (mode 0644, owner 0:0, mtime 0) in one layer,
    /// linux/amd64, with Palisade's labels; the same bytes in, the same image out.
    pub fn for_wasm(module: &str, wasm: &[u8], version: &str) -> OciImage {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(wasm.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        // Appending to a Vec cannot fail; the path is a fixed, valid name.
        let _ = tar.append_data(&mut header, "plugin.wasm", wasm);
        let layer_tar = tar.into_inner().unwrap_or_default();
        const EPOCH: &str = "1970-01-01T00:00:00Z";
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "created": EPOCH,
            "config": {
                "Labels": {
                    "io.palisade": "1",
                    "org.opencontainers.image.title": format!("palisade {module} (Wasm module, /plugin.wasm)"),
                    "org.opencontainers.image.version": version,
                }
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": [format!("sha256:{}", sha256_hex(&layer_tar))],
            },
            "history": [{"created": EPOCH, "created_by": "palisade-istio image: COPY plugin.wasm /plugin.wasm"}],
        });
        OciImage::from_parts(config.to_string().into_bytes(), &layer_tar)
    }

    /// The uncompressed layer tar (what `rootfs.diff_ids[0]` is the sha256 of).
    pub fn layer_tar(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = flate2::read::GzDecoder::new(self.layer.as_slice()).read_to_end(&mut out);
        out
    }

    /// The image as a `docker load` archive, tagged `tag` (e.g. `palisade/rate_limit-wasm:0.1.0`).
    /// Docker keeps the config bytes, so the loaded image's id is `sha256:<config digest>`.
    pub fn docker_archive(&self, tag: &str) -> Vec<u8> {
        let layer_tar = self.layer_tar();
        let config_name = format!("{}.json", sha256_hex(&self.config));
        let layer_name = format!("{}/layer.tar", sha256_hex(&layer_tar));
        let manifest = serde_json::json!([{
            "Config": config_name,
            "RepoTags": [tag],
            "Layers": [layer_name],
        }])
        .to_string();
        let mut tar = tar::Builder::new(Vec::new());
        for (name, bytes) in [
            ("manifest.json", manifest.as_bytes()),
            (config_name.as_str(), self.config.as_slice()),
            (layer_name.as_str(), layer_tar.as_slice()),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            let _ = tar.append_data(&mut header, name, bytes);
        }
        tar.into_inner().unwrap_or_default()
    }

    /// An image from its config blob and its uncompressed layer tar.
    pub fn from_parts(config: Vec<u8>, layer_tar: &[u8]) -> OciImage {
        let layer = gzip(layer_tar);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": format!("sha256:{}", sha256_hex(&config)),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": format!("sha256:{}", sha256_hex(&layer)),
                "size": layer.len(),
            }],
        });
        OciImage {
            manifest: manifest.to_string().into_bytes(),
            config,
            layer,
        }
    }

    /// The manifest digest, lower-case hex (what `sha256:` pins and a registry serves).
    pub fn digest(&self) -> String {
        sha256_hex(&self.manifest)
    }

    /// Write an OCI image layout at `dir` (replacing it) with this image tagged `tag`, for
    /// `skopeo copy oci:<dir>:<tag> docker://...`.
    pub fn write_layout(&self, dir: &Path, tag: &str) -> std::io::Result<()> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)?;
        for blob in [&self.manifest, &self.config, &self.layer] {
            std::fs::write(blobs.join(sha256_hex(blob)), blob)?;
        }
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": format!("sha256:{}", self.digest()),
                "size": self.manifest.len(),
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        });
        std::fs::write(dir.join("index.json"), index.to_string())
    }
}

/// gzip with no file name and mtime 0, so equal input gives equal output.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// Decompress a gzip tar layer and return the file at `name` (e.g. `plugin.wasm`), as Istio's
/// fetcher reads it.
pub fn file_in_gzip_layer(layer: &[u8], name: &str) -> Result<Vec<u8>, String> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    for entry in tar
        .entries()
        .map_err(|e| format!("layer is not a gzip tar: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("layer is not a gzip tar: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| e.to_string())?
            .display()
            .to_string();
        if path.trim_start_matches("./").trim_start_matches('/') == name {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
            return Ok(bytes);
        }
    }
    Err(format!("layer has no file {name}"))
}

/// Rewrite the pinned digests in WasmPlugin manifests: in every YAML document whose `url` is
/// `oci://<registry>/<prefix>/<module>-wasm@sha256:<hex>`, the url's digest and the `sha256:`
/// field become `digests[module]`. Returns the new text and the modules it pinned.
pub fn pin_manifests(
    text: &str,
    digests: &BTreeMap<String, String>,
) -> Result<(String, Vec<String>), String> {
    let url =
        regex_lite::Regex::new(r"^(\s*url:\s*oci://\S+/)([a-z_]+)-wasm@sha256:[0-9a-f]{64}\s*$")
            .map_err(|e| e.to_string())?;
    let sha = regex_lite::Regex::new(r"^(\s*sha256:\s*)\S*\s*$").map_err(|e| e.to_string())?;
    // Each document's module comes from its url, which may follow its sha256 line: two passes.
    let docs: Vec<&str> = split_documents(text);
    let mut out = String::new();
    let mut pinned = Vec::new();
    for doc in docs {
        let module = doc
            .lines()
            .find_map(|l| url.captures(l).map(|c| c[2].to_owned()));
        let Some(module) = module else {
            out.push_str(doc);
            continue;
        };
        let digest = digests
            .get(&module)
            .ok_or_else(|| format!("no image digest for module {module}"))?;
        for line in doc.split_inclusive('\n') {
            let (body, nl) = match line.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (line, ""),
            };
            if let Some(c) = url.captures(body) {
                out.push_str(&format!("{}{module}-wasm@sha256:{digest}{nl}", &c[1]));
            } else if let Some(c) = sha.captures(body) {
                // Quoted: an all-digit digest would be read as a number.
                out.push_str(&format!("{}\"{digest}\"{nl}", &c[1]));
            } else {
                out.push_str(line);
            }
        }
        pinned.push(module);
    }
    Ok((out, pinned))
}

/// Split YAML text into documents, each keeping its lines (a `---` line starts a new one).
fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" && pos > start {
            docs.push(&text[start..pos]);
            start = pos;
        }
        pos += line.len();
    }
    docs.push(&text[start..]);
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_with(name: &str, bytes: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, bytes).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn the_same_image_gives_the_same_digest_and_the_layer_holds_the_module() {
        let layer = layer_with("plugin.wasm", b"\0asm\x01\0\0\0");
        let a = OciImage::from_parts(b"{}".to_vec(), &layer);
        let b = OciImage::from_parts(b"{}".to_vec(), &layer);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(
            file_in_gzip_layer(&a.layer, "plugin.wasm").unwrap(),
            b"\0asm\x01\0\0\0"
        );
        let other = OciImage::from_parts(b"{}".to_vec(), &layer_with("plugin.wasm", b"\0asm"));
        assert_ne!(a.digest(), other.digest());
    }

    #[test]
    fn a_module_image_is_reproducible_and_reads_back_from_its_docker_archive() {
        let wasm = b"\0asm\x01\0\0\0 module";
        let a = OciImage::for_wasm("rate_limit", wasm, "0.1.0");
        let b = OciImage::for_wasm("rate_limit", wasm, "0.1.0");
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.config, b.config);
        assert_eq!(file_in_gzip_layer(&a.layer, "plugin.wasm").unwrap(), wasm);
        // What `docker save` gives back for the loaded archive is the same image.
        let back =
            OciImage::from_docker_archive(&a.docker_archive("palisade/rate_limit-wasm:0.1.0"))
                .unwrap();
        assert_eq!(back.digest(), a.digest());
        let config: serde_json::Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(
            (config["os"].as_str(), config["architecture"].as_str()),
            (Some("linux"), Some("amd64"))
        );
        assert_ne!(
            OciImage::for_wasm("rate_limit", b"\0asm other", "0.1.0").digest(),
            a.digest()
        );
    }

    #[test]
    fn pinning_rewrites_url_and_sha256_of_each_document_by_its_module() {
        let zero = "0".repeat(64);
        let text = format!(
            "# c\nspec:\n  sha256: \"{zero}\"\n  url: oci://r.example/p/rate_limit-wasm@sha256:{zero}\n---\nspec:\n  url: oci://r.example/p/bulkhead-wasm@sha256:{zero}\n  sha256: {zero}\n"
        );
        let digests: BTreeMap<String, String> = [
            ("rate_limit".to_owned(), "a".repeat(64)),
            ("bulkhead".to_owned(), "b".repeat(64)),
        ]
        .into();
        let (out, pinned) = pin_manifests(&text, &digests).unwrap();
        assert_eq!(pinned, ["rate_limit", "bulkhead"]);
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        assert_eq!(
            out,
            format!("# c\nspec:\n  sha256: \"{a}\"\n  url: oci://r.example/p/rate_limit-wasm@sha256:{a}\n---\nspec:\n  url: oci://r.example/p/bulkhead-wasm@sha256:{b}\n  sha256: \"{b}\"\n")
        );
        let missing: BTreeMap<String, String> = BTreeMap::new();
        assert!(pin_manifests(&text, &missing)
            .unwrap_err()
            .contains("rate_limit"));
    }
}
