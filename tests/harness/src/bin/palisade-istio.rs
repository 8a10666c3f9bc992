//! `palisade-istio`: the Istio side of the release, run by the Makefile.
//!
//! ```text
//! palisade-istio image <version> <module>...
//! palisade-istio pin <version> <module>...
//! palisade-istio serve <port> <module>...
//! ```
//!
//! `image` (run by `make images`, `scripts/images.sh`) builds `palisade/<module>-wasm:<version>`
//! reproducibly from `dist/<module>.wasm` (`OciImage::for_wasm`) and `docker load`s it, unless
//! Docker already has that exact image; prints `<image> built` or `<image> unchanged` per module.
//!
//! For each module, takes the image `palisade/<module>-wasm:<version>` that `make images` built,
//! writes it as an OCI image layout to `target/oci/<module>-wasm` (tag `<version>`; `make
//! push-wasm` copies these to a registry unchanged), and rewrites every `deploy/istio/*.yaml` so
//! its `url` (`...@sha256:`) and `sha256` pin that image's manifest digest. Prints each digest.
//!
//! `serve` (`make serve-wasm`) serves `dist/<module>.wasm` over plain HTTP on `127.0.0.1:<port>`
//! (the server the end-to-end tests fetch `vm_config.code.remote` from), writes
//! `dist/SHA256SUMS` and prints each URL with the sha256 a WasmPlugin `url: http(s)://...` needs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_harness::istio::{self, oci::OciImage};
use palisade_harness::repo_root;
use std::collections::BTreeMap;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((cmd, rest)) if cmd == "pin" && rest.len() >= 2 => match pin(&rest[0], &rest[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("palisade-istio pin: {e}");
                ExitCode::FAILURE
            }
        },
        Some((cmd, rest)) if cmd == "image" && rest.len() >= 2 => match image(&rest[0], &rest[1..])
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("palisade-istio image: {e}");
                ExitCode::FAILURE
            }
        },
        Some((cmd, rest)) if cmd == "serve" && rest.len() >= 2 => match serve(&rest[0], &rest[1..])
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("palisade-istio serve: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: palisade-istio image <version> <module>...\n       palisade-istio pin <version> <module>...\n       palisade-istio serve <port> <module>...");
            ExitCode::from(2)
        }
    }
}

fn pin(version: &str, modules: &[String]) -> Result<(), String> {
    let mut digests = BTreeMap::new();
    for m in modules {
        let image = format!("palisade/{m}-wasm:{version}");
        let oci = OciImage::from_docker(&image)?;
        let layout = repo_root().join("target/oci").join(format!("{m}-wasm"));
        oci.write_layout(&layout, version)
            .map_err(|e| format!("write {}: {e}", layout.display()))?;
        println!("{image:<36} sha256:{}  {}", oci.digest(), layout.display());
        digests.insert(m.clone(), oci.digest());
    }
    for file in istio::manifest_files() {
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let (pinned, modules) = istio::oci::pin_manifests(&text, &digests)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        if pinned != text {
            std::fs::write(&file, &pinned).map_err(|e| format!("{}: {e}", file.display()))?;
            println!("pinned {} ({})", file.display(), modules.join(", "));
        }
    }
    Ok(())
}

fn serve(port: &str, modules: &[String]) -> Result<(), String> {
    let mut files = Vec::new();
    let mut sums = String::new();
    for m in modules {
        let path = repo_root().join("dist").join(format!("{m}.wasm"));
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("{}: {e} (run `make build`)", path.display()))?;
        sums.push_str(&format!("{}  {m}.wasm\n", istio::oci::sha256_hex(&bytes)));
        files.push((format!("/{m}.wasm"), bytes));
    }
    std::fs::write(repo_root().join("dist/SHA256SUMS"), &sums)
        .map_err(|e| format!("dist/SHA256SUMS: {e}"))?;
    let server = istio::ecds::StaticServer::start_on(&format!("127.0.0.1:{port}"), files)
        .map_err(|e| format!("listen on 127.0.0.1:{port}: {e}"))?;
    for line in sums.lines() {
        if let Some((sum, file)) = line.split_once("  ") {
            println!("{}  sha256: {sum}", server.url(&format!("/{file}")));
        }
    }
    println!("serving dist/ (SHA256SUMS written); Ctrl-C stops");
    loop {
        std::thread::park();
    }
}

fn image(version: &str, modules: &[String]) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    for m in modules {
        let path = repo_root().join("dist").join(format!("{m}.wasm"));
        let wasm = std::fs::read(&path)
            .map_err(|e| format!("{}: {e} (run `make build`)", path.display()))?;
        let oci = OciImage::for_wasm(m, &wasm, version);
        let tag = format!("palisade/{m}-wasm:{version}");
        let id = format!("sha256:{}", istio::oci::sha256_hex(&oci.config));
        let have = Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", &tag])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        if have == id {
            println!("{tag} unchanged");
            continue;
        }
        let mut load = Command::new("docker")
            .args(["load", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("docker load: {e}"))?;
        if let Some(mut stdin) = load.stdin.take() {
            stdin
                .write_all(&oci.docker_archive(&tag))
                .map_err(|e| format!("docker load {tag}: {e}"))?;
        }
        let out = load
            .wait_with_output()
            .map_err(|e| format!("docker load {tag}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "docker load {tag}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let loaded = Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", &tag])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        if loaded != id {
            return Err(format!("{tag}: Docker holds {loaded:?} after loading {id}"));
        }
        println!("{tag} built");
    }
    Ok(())
}
