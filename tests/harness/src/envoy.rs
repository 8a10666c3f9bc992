//! Starting and stopping a real Envoy.
//!
//! [`Runner`] is the seam between "how Envoy is launched" and everything else: today a local
//! binary ([`LocalBinary`], from `ENVOY_BIN` or the Makefile-installed copy); a container runner
//! can implement the same trait later.

use crate::client;
use crate::repo_root;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long Envoy may take to become ready before the start counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Launches an Envoy process.
pub trait Runner {
    /// Start Envoy with these arguments, sending stdout and stderr to `log`.
    fn spawn(&self, args: &[String], log: File) -> io::Result<Child>;
    /// Human-readable description for error messages.
    fn describe(&self) -> String;
}

/// Runs a local Envoy binary.
#[derive(Debug, Clone)]
pub struct LocalBinary {
    pub path: PathBuf,
}

impl LocalBinary {
    /// `ENVOY_BIN` if set, else the copy `make setup` installs under `.tools/`.
    pub fn from_env() -> LocalBinary {
        let path = std::env::var_os("ENVOY_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".tools/bin/envoy"));
        assert!(
            path.is_file(),
            "Envoy binary {} not found: run `make setup` or set ENVOY_BIN",
            path.display()
        );
        LocalBinary { path }
    }
}

impl Runner for LocalBinary {
    fn spawn(&self, args: &[String], log: File) -> io::Result<Child> {
        let err = log.try_clone()?;
        Command::new(&self.path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// Options for one Envoy.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// Worker threads (`--concurrency`); 2 by default so cross-worker behaviour is exercised.
    pub concurrency: usize,
    /// `--log-level`.
    pub log_level: String,
    /// `--component-log-level`, e.g. `wasm:debug`.
    pub component_log_level: Option<String>,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        EnvoyOptions {
            concurrency: 2,
            log_level: "info".to_owned(),
            component_log_level: None,
        }
    }
}

/// Envoy did not become ready. Carries its log, so tests can assert on config rejections.
#[derive(Debug)]
pub struct StartError {
    pub reason: String,
    pub log: String,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Envoy did not start: {}\n----- envoy log -----\n{}",
            self.reason, self.log
        )
    }
}

impl std::error::Error for StartError {}

/// A running Envoy, killed on drop (its log is printed then if the test is failing).
///
/// Every test also checks on drop that no Wasm VM failed while it ran ([`Envoy::vm_failures`]):
/// a module that panicked fails the test even if the requests it sent got the statuses it wanted.
/// A test that crashes a VM on purpose says so with [`Envoy::expect_vm_failures`].
pub struct Envoy {
    child: Child,
    admin: String,
    listener_port: u16,
    log_path: PathBuf,
    vm_failures_expected: std::sync::atomic::AtomicBool,
    _dir: tempfile::TempDir,
}

static NEXT_BASE_ID: AtomicU32 = AtomicU32::new(0);

/// A `--base-id` no other Envoy of this machine's test runs uses: the process id spreads parallel
/// test processes apart, the counter separates Envoys within one.
fn unique_base_id() -> u32 {
    let n = NEXT_BASE_ID.fetch_add(1, Ordering::Relaxed) % 64;
    (std::process::id() % 1_000_000) * 64 + n
}

impl Envoy {
    /// Start Envoy on `bootstrap_yaml` with default options and the local binary.
    pub fn start(bootstrap_yaml: &str) -> Result<Envoy, StartError> {
        Envoy::start_with(
            bootstrap_yaml,
            &EnvoyOptions::default(),
            &LocalBinary::from_env(),
        )
    }

    /// Start Envoy and wait until its admin port says it is ready and its listener is bound.
    pub fn start_with(
        bootstrap_yaml: &str,
        opts: &EnvoyOptions,
        runner: &dyn Runner,
    ) -> Result<Envoy, StartError> {
        let fail = |reason: String| StartError {
            reason,
            log: String::new(),
        };
        let dir = tempfile::tempdir().map_err(|e| fail(format!("tempdir: {e}")))?;
        let config = dir.path().join("bootstrap.yaml");
        std::fs::write(&config, bootstrap_yaml)
            .map_err(|e| fail(format!("write bootstrap: {e}")))?;
        let admin_file = dir.path().join("admin-address");
        let log_path = dir.path().join("envoy.log");
        let log = File::create(&log_path).map_err(|e| fail(format!("create log: {e}")))?;
        let mut args = vec![
            "-c".to_owned(),
            config.display().to_string(),
            "--concurrency".to_owned(),
            opts.concurrency.to_string(),
            "--base-id".to_owned(),
            unique_base_id().to_string(),
            "--admin-address-path".to_owned(),
            admin_file.display().to_string(),
            "--log-level".to_owned(),
            opts.log_level.clone(),
        ];
        if let Some(c) = &opts.component_log_level {
            args.push("--component-log-level".to_owned());
            args.push(c.clone());
        }
        let child = runner
            .spawn(&args, log)
            .map_err(|e| fail(format!("spawn {}: {e}", runner.describe())))?;
        let mut envoy = Envoy {
            child,
            admin: String::new(),
            listener_port: 0,
            log_path,
            vm_failures_expected: std::sync::atomic::AtomicBool::new(false),
            _dir: dir,
        };
        match envoy.wait_ready(&admin_file) {
            Ok(()) => Ok(envoy),
            Err(reason) => {
                envoy.kill();
                Err(StartError {
                    reason,
                    log: envoy.log(),
                })
            }
        }
    }

    fn wait_ready(&mut self, admin_file: &Path) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut pause = Duration::from_millis(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("Envoy exited during startup with {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {START_TIMEOUT:?}"));
            }
            if self.admin.is_empty() {
                if let Ok(addr) = std::fs::read_to_string(admin_file) {
                    if !addr.trim().is_empty() {
                        self.admin = format!("http://{}", addr.trim());
                    }
                }
            }
            if !self.admin.is_empty() {
                let ready = client::get(&format!("{}/ready", self.admin))
                    .map(|r| r.status == 200)
                    .unwrap_or(false);
                if ready {
                    if let Some(port) = self.discover_listener_port() {
                        self.listener_port = port;
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    fn discover_listener_port(&self) -> Option<u16> {
        let body = client::get(&format!("{}/listeners?format=json", self.admin))
            .ok()?
            .body;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let port = v
            .get("listener_statuses")?
            .as_array()?
            .first()?
            .pointer("/local_address/socket_address/port_value")?
            .as_u64()?;
        u16::try_from(port).ok().filter(|p| *p != 0)
    }

    /// `http://127.0.0.1:<listener port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.listener_port, path)
    }

    pub fn listener_port(&self) -> u16 {
        self.listener_port
    }

    /// The admin base URL, `http://127.0.0.1:<port>`.
    pub fn admin_url(&self) -> &str {
        &self.admin
    }

    /// Every counter and gauge from `/stats`, by name.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.try_stats().expect("GET /stats")
    }

    fn try_stats(&self) -> Result<BTreeMap<String, u64>, String> {
        let body = client::get(&format!("{}/stats", self.admin))?.body;
        Ok(body
            .lines()
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(": ")?;
                Some((name.to_owned(), value.trim().parse::<u64>().ok()?))
            })
            .collect())
    }

    /// One stat, or 0 if Envoy has not created it (yet).
    pub fn stat(&self, name: &str) -> u64 {
        self.stats().get(name).copied().unwrap_or(0)
    }

    /// Downstream connections accepted so far by each worker of the listener(s), by worker index.
    pub fn worker_connections(&self) -> Vec<u64> {
        let mut per_worker: BTreeMap<usize, u64> = BTreeMap::new();
        for (name, value) in self.stats() {
            let Some(rest) = name.strip_prefix("listener.") else {
                continue;
            };
            let Some(rest) = rest.strip_suffix(".downstream_cx_total") else {
                continue;
            };
            let Some((_, worker)) = rest.rsplit_once(".worker_") else {
                continue;
            };
            if let Ok(w) = worker.parse::<usize>() {
                *per_worker.entry(w).or_insert(0) += value;
            }
        }
        per_worker.into_values().collect()
    }

    /// Everything Envoy has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Evidence that a Wasm VM failed: a module that panics or traps is aborted, and with
    /// `FAIL_CLOSED` every later request on that worker gets 503 (`FAIL_RELOAD` replaces the VM).
    /// Envoy shows it in the `wasm.<filter>.vm_reload*` counters (`FAIL_RELOAD` filters only) and in
    /// its log (`Function: proxy_on_... failed`, and our panic hook's `panic (the worker's Wasm VM
    /// will abort)` line, at any failure policy). Empty when no VM failed.
    pub fn vm_failures(&self) -> Vec<String> {
        self.try_vm_failures()
            .unwrap_or_else(|e| vec![format!("GET /stats failed: {e}")])
    }

    fn try_vm_failures(&self) -> Result<Vec<String>, String> {
        let mut found: Vec<String> = self
            .try_stats()?
            .into_iter()
            .filter(|(name, value)| {
                name.starts_with("wasm.") && name.contains(".vm_reload") && *value > 0
            })
            .map(|(name, value)| format!("stat {name} = {value}"))
            .collect();
        found.extend(
            self.log()
                .lines()
                .filter(|l| {
                    (l.contains("Function: ") && l.contains(" failed"))
                        || l.contains("Wasm VM will abort")
                })
                .map(|l| format!("log {l}")),
        );
        Ok(found)
    }

    /// This test makes a Wasm VM fail on purpose: skip the check on drop.
    pub fn expect_vm_failures(&self) {
        self.vm_failures_expected.store(true, Ordering::Relaxed);
    }

    /// Panic (printing the log) if any Wasm VM failed; see [`Envoy::vm_failures`].
    pub fn assert_no_vm_failures(&self) {
        let failures = self.vm_failures();
        assert!(
            failures.is_empty(),
            "a Wasm VM failed:\n{}",
            failures.join("\n")
        );
    }

    /// The Envoy process id (for CPU accounting in benchmarks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // The VM check needs the admin port, so it runs before the kill; not for an Envoy that
        // never became ready (no admin port) or a test that is already failing.
        let failures = if std::thread::panicking()
            || self.admin.is_empty()
            || self.vm_failures_expected.load(Ordering::Relaxed)
        {
            Vec::new()
        } else {
            self.try_vm_failures().unwrap_or_default()
        };
        self.kill();
        if !failures.is_empty() {
            panic!(
                "a Wasm VM failed during this test:\n{}\n----- envoy log ({}) -----\n{}\n----- end of envoy log -----",
                failures.join("\n"),
                self.log_path.display(),
                self.log()
            );
        }
        if std::thread::panicking() {
            eprintln!(
                "----- envoy log ({}) -----\n{}\n----- end of envoy log -----",
                self.log_path.display(),
                self.log()
            );
        }
    }
}

/// Run `envoy --mode validate` on a bootstrap file, from the repository root (so relative module
/// paths resolve as they do for `make demo`); `Err` carries Envoy's output.
pub fn validate(bootstrap: &Path) -> Result<(), String> {
    let bin = LocalBinary::from_env();
    let out = Command::new(&bin.path)
        .current_dir(repo_root())
        .args(["--mode", "validate", "-c"])
        .arg(bootstrap)
        .args(["--base-id", &unique_base_id().to_string()])
        .output()
        .map_err(|e| format!("spawn {}: {e}", bin.describe()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
