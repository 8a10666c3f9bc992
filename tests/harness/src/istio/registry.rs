//! A real OCI registry on loopback (Debian's `docker-registry`, the CNCF distribution registry)
//! and `skopeo`, an independent client, to push and read back the Wasm images.

use crate::client;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `docker-registry serve` on 127.0.0.1 with its storage in a temporary directory; killed
/// (and its storage removed) on drop.
pub struct Registry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Result<Registry, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let port = crate::free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        // Listen on loopback only (the package's default is every address).
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .map_err(|e| format!("write registry config: {e}"))?;
        let log = std::fs::File::create(dir.path().join("registry.log"))
            .map_err(|e| format!("registry log: {e}"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| {
                format!("spawn docker-registry: {e} (Debian package docker-registry; `make istio-tools` installs it)")
            })?;
        let mut registry = Registry {
            child,
            addr,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = registry.child.try_wait() {
                return Err(format!(
                    "docker-registry exited with {status}: {}",
                    registry.log()
                ));
            }
            if client::get(&format!("http://{}/v2/", registry.addr)).is_ok_and(|r| r.status == 200)
            {
                return Ok(registry);
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "docker-registry not ready after 30 s: {}",
                    registry.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `skopeo` with `args`; its stdout, or its stderr as the error.
pub fn skopeo(args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("skopeo").args(args).output().map_err(|e| {
        format!("spawn skopeo: {e} (Debian package skopeo; `make istio-tools` installs it)")
    })?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "skopeo {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Push the OCI layout at `layout` (tag `tag`) to `docker://<dest>`.
pub fn push_layout(layout: &Path, tag: &str, dest: &str) -> Result<(), String> {
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:{tag}", layout.display()),
        &format!("docker://{dest}"),
    ])
    .map(drop)
}
