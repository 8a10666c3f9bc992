//! Starting and stopping a real Envoy.
//!
//! [`Runner`] is the seam between "how Envoy is launched" and everything else: a local binary
//! ([`LocalBinary`], from `ENVOY_BIN` or the Makefile-installed copy, the default) or a container
//! ([`DockerRunner`], chosen with `PALISADE_RUNNER=docker`). Tests do not know which one runs: the
//! same bootstrap, the same ports, the same assertions.

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

/// What to launch: Envoy's arguments, and the host paths they name.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub args: Vec<String>,
    /// Files and directories Envoy only reads (the bootstrap, modules, LDS files).
    pub read_only: Vec<PathBuf>,
    /// Directories Envoy writes into (the admin address file).
    pub writable: Vec<PathBuf>,
}

/// A launched Envoy: the process the harness waits on, and the container behind it, if any.
#[derive(Debug)]
pub struct Process {
    pub child: Child,
    /// Container name to remove when the Envoy is stopped (killing the `docker run` client alone
    /// would leave the container running).
    pub container: Option<String>,
}

/// Launches an Envoy process.
pub trait Runner {
    /// Start Envoy, sending its stdout and stderr to `log`.
    fn spawn(&self, launch: &Launch, log: File) -> io::Result<Process>;
    /// Human-readable description for error messages.
    fn describe(&self) -> String;
    /// Run `envoy --mode validate -c <config>` with `workdir` as the working directory.
    fn validate(&self, config: &Path, workdir: &Path) -> io::Result<std::process::Output>;
}

/// The runner `PALISADE_RUNNER` names: `native` (the default) or `docker`.
pub fn runner_from_env() -> Box<dyn Runner> {
    match std::env::var("PALISADE_RUNNER").as_deref() {
        Err(_) | Ok("") | Ok("native") => Box::new(LocalBinary::from_env()),
        Ok("docker") => Box::new(DockerRunner::from_env()),
        Ok(other) => panic!("PALISADE_RUNNER={other:?}: expected `native` or `docker`"),
    }
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
    fn spawn(&self, launch: &Launch, log: File) -> io::Result<Process> {
        let err = log.try_clone()?;
        let child = Command::new(&self.path)
            .args(&launch.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()?;
        Ok(Process {
            child,
            container: None,
        })
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn validate(&self, config: &Path, workdir: &Path) -> io::Result<std::process::Output> {
        Command::new(&self.path)
            .current_dir(workdir)
            .args(["--mode", "validate", "-c"])
            .arg(config)
            .args(["--base-id", &unique_base_id().to_string()])
            .output()
    }
}

/// Runs Envoy in a container of `image` (`palisade/envoy:<version>` from `make images`, or the
/// official `envoyproxy/envoy:v<version>`: both take Envoy's arguments as the command).
///
/// - The container joins the host's network namespace (`--network host`). The tests bind Envoy's
///   listener and admin port to 127.0.0.1 port 0 and discover them, reload listeners on fixed
///   loopback ports, and talk to upstreams and JWKS servers that run in the test process on
///   127.0.0.1: in the host namespace all of that works unchanged, and every byte stays on
///   loopback. Nothing is exposed beyond 127.0.0.1, since that is all Envoy binds. (The compose
///   demo, deploy/compose, is where Envoy runs on a bridge network with published ports.)
/// - Host paths are mounted at the same paths, so the bootstrap needs no rewriting: the config,
///   `dist/` and the other paths the bootstrap names ([`referenced_paths`]) read-only, the
///   admin-address directory read-write.
/// - The container runs as the test process's uid and gid, so it can read the test's private
///   temporary directories and the files it writes belong to the test.
/// - Each container has a unique name and the label `io.palisade`; it is removed (`docker rm -f`)
///   when its [`Envoy`] is dropped, including when the test panics. `make e2e-docker` checks that
///   none is left.
#[derive(Debug, Clone)]
pub struct DockerRunner {
    pub image: String,
}

static NEXT_CONTAINER: AtomicU32 = AtomicU32::new(0);

impl DockerRunner {
    /// The image from `PALISADE_ENVOY_IMAGE` (the Makefile sets it to `palisade/envoy:<version>`).
    pub fn from_env() -> DockerRunner {
        let image = std::env::var("PALISADE_ENVOY_IMAGE").unwrap_or_default();
        assert!(
            !image.is_empty(),
            "PALISADE_RUNNER=docker needs PALISADE_ENVOY_IMAGE (e.g. palisade/envoy:1.40.0 from `make images`); `make e2e-docker` sets both"
        );
        DockerRunner { image }
    }

    /// `--user uid:gid` of the directory `dir` (one the test process created), without libc.
    fn user_of(dir: &Path) -> io::Result<String> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir)?;
        Ok(format!("{}:{}", meta.uid(), meta.gid()))
    }

    fn mount_args(read_only: &[PathBuf], writable: &[PathBuf]) -> Vec<String> {
        let mut args = Vec::new();
        for p in writable {
            args.push("--volume".to_owned());
            args.push(format!("{0}:{0}:rw", p.display()));
        }
        for p in minimal_dirs(read_only) {
            if writable.iter().any(|w| p.starts_with(w)) {
                continue;
            }
            args.push("--volume".to_owned());
            args.push(format!("{0}:{0}:ro", p.display()));
        }
        args
    }
}

/// The directories to mount for `paths`: a file's parent, a directory itself, none inside another.
fn minimal_dirs(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .filter_map(|p| {
            if p.is_dir() {
                Some(p.clone())
            } else {
                p.parent().map(Path::to_path_buf)
            }
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut kept: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if !kept.iter().any(|k| d.starts_with(k)) {
            kept.push(d);
        }
    }
    kept
}

impl Runner for DockerRunner {
    fn spawn(&self, launch: &Launch, log: File) -> io::Result<Process> {
        let owner = launch
            .writable
            .first()
            .ok_or_else(|| io::Error::other("a container needs a writable directory"))?;
        let name = format!(
            "palisade-test-{}-{}",
            std::process::id(),
            NEXT_CONTAINER.fetch_add(1, Ordering::Relaxed)
        );
        let err = log.try_clone()?;
        let child = Command::new("docker")
            .args(["run", "--rm", "--name", &name])
            .args([
                "--label",
                "io.palisade=1",
                "--label",
                "io.palisade.role=e2e",
            ])
            .args([
                "--network",
                "host",
                "--user",
                &DockerRunner::user_of(owner)?,
            ])
            // The official image's entrypoint drops root to its `envoy` user unless ENVOY_UID is
            // 0; the test's uid must stay, to read the test's private directories.
            .args(["--env", "ENVOY_UID=0"])
            .args(DockerRunner::mount_args(
                &launch.read_only,
                &launch.writable,
            ))
            .arg(&self.image)
            .args(&launch.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()?;
        Ok(Process {
            child,
            container: Some(name),
        })
    }

    fn describe(&self) -> String {
        format!("docker image {}", self.image)
    }

    fn validate(&self, config: &Path, workdir: &Path) -> io::Result<std::process::Output> {
        let config = workdir.join(config);
        Command::new("docker")
            .args([
                "run",
                "--rm",
                "--label",
                "io.palisade=1",
                "--network",
                "none",
            ])
            .args(["--user", &DockerRunner::user_of(workdir)?])
            .args(DockerRunner::mount_args(
                &[workdir.to_path_buf(), config.clone()],
                &[],
            ))
            .arg("--workdir")
            .arg(workdir)
            .arg(&self.image)
            .args(["--mode", "validate", "-c"])
            .arg(&config)
            .output()
    }
}

/// Absolute paths under the repository or the temporary directory that a bootstrap names and that
/// exist (module files, LDS files and their watched directories): what a container must be able to
/// read. Other paths (`/dev/stdout` for access logs, route prefixes) are not the harness's to mount.
pub fn referenced_paths(bootstrap_yaml: &str) -> Vec<PathBuf> {
    let roots = [repo_root(), std::env::temp_dir()];
    let mut found = Vec::new();
    for (i, _) in bootstrap_yaml.match_indices('/') {
        let before = bootstrap_yaml[..i].chars().next_back();
        if !matches!(before, Some('"') | Some(' ')) {
            continue;
        }
        let rest = &bootstrap_yaml[i..];
        let end = rest
            .find(|c: char| c == '"' || c == ',' || c == '}' || c.is_whitespace())
            .unwrap_or(rest.len());
        let candidate = PathBuf::from(&rest[..end]);
        if roots
            .iter()
            .any(|r| candidate.starts_with(r) && candidate != *r)
            && candidate.exists()
        {
            found.push(candidate);
        }
    }
    found
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
    process: Process,
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
    /// Start Envoy on `bootstrap_yaml` with default options and the runner `PALISADE_RUNNER`
    /// names ([`runner_from_env`]: the local binary unless it says `docker`).
    pub fn start(bootstrap_yaml: &str) -> Result<Envoy, StartError> {
        Envoy::start_with(
            bootstrap_yaml,
            &EnvoyOptions::default(),
            runner_from_env().as_ref(),
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
        // The bootstrap in a directory of its own (read-only in a container), the admin address
        // file in another (written by Envoy).
        let config_dir = dir.path().join("config");
        let run_dir = dir.path().join("run");
        for d in [&config_dir, &run_dir] {
            std::fs::create_dir(d).map_err(|e| fail(format!("create {}: {e}", d.display())))?;
        }
        let config = config_dir.join("bootstrap.yaml");
        std::fs::write(&config, bootstrap_yaml)
            .map_err(|e| fail(format!("write bootstrap: {e}")))?;
        let admin_file = run_dir.join("admin-address");
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
            // Access logs reach the log file within 100 ms instead of Envoy's default 10 s, so a
            // test can poll for a line.
            "--file-flush-interval-msec".to_owned(),
            "100".to_owned(),
        ];
        if let Some(c) = &opts.component_log_level {
            args.push("--component-log-level".to_owned());
            args.push(c.clone());
        }
        // dist/ always: resources delivered later (LDS files) name modules the bootstrap does not.
        let mut read_only = vec![config_dir, repo_root().join("dist")];
        read_only.extend(referenced_paths(bootstrap_yaml));
        let launch = Launch {
            args,
            read_only,
            writable: vec![run_dir],
        };
        let process = runner
            .spawn(&launch, log)
            .map_err(|e| fail(format!("spawn {}: {e}", runner.describe())))?;
        let mut envoy = Envoy {
            process,
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
            if let Ok(Some(status)) = self.process.child.try_wait() {
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

    /// One stat. A name Envoy does not have fails the test (its stats are listed), as a misspelled
    /// metric must not pass a `== 0` check; a stat Envoy creates only on first use is read with
    /// [`Envoy::stat_or_zero`].
    pub fn stat(&self, name: &str) -> u64 {
        let stats = self.stats();
        match stats.get(name) {
            Some(v) => *v,
            None => {
                let prefix = name.split('.').take(2).collect::<Vec<_>>().join(".");
                let near: Vec<&String> = stats.keys().filter(|k| k.starts_with(&prefix)).collect();
                panic!("Envoy has no stat {name:?}; stats under {prefix:?}: {near:?}")
            }
        }
    }

    /// One stat, or 0 if Envoy has not created it: only for stats Envoy creates lazily (a cluster's
    /// `upstream_rq_503` appears with the first 503), never for a module's own metrics, which exist
    /// from `on_configure` on.
    pub fn stat_or_zero(&self, name: &str) -> u64 {
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

    /// The Envoy process id (for CPU accounting in benchmarks). With [`DockerRunner`] it is the
    /// `docker run` client's, not Envoy's: benchmarks run the local binary.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// The container Envoy runs in, if a container runner started it.
    pub fn container(&self) -> Option<&str> {
        self.process.container.as_deref()
    }

    fn kill(&mut self) {
        if let Some(name) = &self.process.container {
            // Removing the container ends the attached `docker run` client as well.
            let _ = Command::new("docker")
                .args(["rm", "--force", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
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
/// paths resolve as they do for `make demo`), with the runner `PALISADE_RUNNER` names; `Err`
/// carries Envoy's output.
pub fn validate(bootstrap: &Path) -> Result<(), String> {
    let runner = runner_from_env();
    let out = runner
        .validate(bootstrap, &repo_root())
        .map_err(|e| format!("spawn {}: {e}", runner.describe()))?;
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
