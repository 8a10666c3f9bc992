//! A real global rate limit engine for the end-to-end tests: Debian's `redis-server` ([`Redis`])
//! and the `palisade-rls` binary ([`RlsEngine`]: Envoy's RLS v3 over Kuadrant's limitador with
//! Redis storage, tests/rls), each on a free loopback port, each killable and restartable on the
//! same port, both killed on drop (their logs printed when the test is failing, like Envoy's).
//!
//! [`RlsClient`] calls the engine natively over gRPC; [`grpc_cluster`] renders the HTTP/2 cluster
//! an Envoy reaches it through ([`crate::Bootstrap::extra_cluster`]).
//!
//! The engine binary is built by `make rls-engine` in its own cached target dir; the harness
//! itself never depends on limitador (only on the engine crate's library: messages and client).

use crate::wait_for;
use palisade_rls::client::rate_limit_service_client::RateLimitServiceClient;
use palisade_rls::proto::{RateLimitRequest, RateLimitResponse};

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

pub use palisade_rls::{proto, tonic};

/// How long Redis or the engine may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Starting a process again on a port it just left: how many fresh ports to try when the first
/// one chosen was taken meanwhile.
const PORT_ATTEMPTS: usize = 3;

/// A `redis-server` on 127.0.0.1 with persistence off (`--save "" --appendonly no`): the
/// counters live only as long as the process, so a restart starts every window afresh.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    starts: u32,
}

impl Redis {
    /// `redis-server` from `PALISADE_REDIS_SERVER` or `PATH` (`make rls-engine` installs
    /// Debian's when missing), on a free loopback port, once it answers `PING`.
    pub fn start() -> Redis {
        let bin = std::env::var_os("PALISADE_REDIS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("redis-server"));
        let mut redis = Redis {
            child: None,
            port: 0,
            dir: tempfile::tempdir().expect("tempdir"),
            bin,
            starts: 0,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            redis.port = crate::free_port();
            match redis.spawn() {
                Ok(()) => return redis,
                Err(e) if attempt < PORT_ATTEMPTS => eprintln!("redis-server: {e}; another port"),
                Err(e) => panic!("{e}\n{}", redis.log()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn spawn(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log = self.dir.path().join(format!("redis-{}.log", self.starts));
        let out = File::create(&log).expect("redis log");
        let err = out.try_clone().expect("redis log");
        let child = Command::new(&self.bin)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): install Debian's redis-server (`make rls-engine` does) or set PALISADE_REDIS_SERVER",
                    self.bin.display()
                )
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "redis-server on port {} exited during startup with {status}",
                    self.port
                ));
            }
            if self.ping() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "redis-server on port {} did not answer PING",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether Redis answers `PING` with `+PONG` right now.
    pub fn ping(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill Redis (SIGKILL) and wait for it to be gone; its counters are lost.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill Redis if running and start it again on the same port, empty, once it answers.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        // The port was just ours; a few tries ride out a slow release.
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        panic!(
            "redis-server did not restart on port {port}: {last}\n{}",
            self.log()
        );
    }

    /// Every log of this Redis (one per start), concatenated.
    pub fn log(&self) -> String {
        logs(self.dir.path(), "redis-", self.starts)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- redis log -----\n{}\n----- end of redis log -----",
                self.log()
            );
        }
    }
}

/// The engine binary: `PALISADE_RLS_BIN`, else `$PALISADE_CACHE/target-rls/rls-engine/palisade-rls`,
/// else `~/.cache/palisade/target-rls/rls-engine/palisade-rls` (where `make rls-engine` builds it).
pub fn engine_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PALISADE_RLS_BIN") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("PALISADE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/palisade")
        });
    cache.join("target-rls/rls-engine/palisade-rls")
}

/// A running `palisade-rls` (RLS v3 over limitador + Redis) on a loopback port.
pub struct RlsEngine {
    child: Option<Child>,
    addr: SocketAddr,
    bin: PathBuf,
    args: Vec<String>,
    dir: tempfile::TempDir,
    starts: u32,
}

impl RlsEngine {
    /// Start the engine on `redis` with the Limitador limits file `limits_yaml`.
    pub fn start(redis: &Redis, limits_yaml: &str) -> RlsEngine {
        RlsEngine::start_with(redis, limits_yaml, &[])
    }

    /// The same with further arguments, e.g. `["--rate-limit-headers", "draft-version03"]`.
    pub fn start_with(redis: &Redis, limits_yaml: &str, extra: &[&str]) -> RlsEngine {
        let bin = engine_binary();
        assert!(
            bin.is_file(),
            "the RLS engine {} is missing: run `make rls-engine` (or set PALISADE_RLS_BIN)",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = dir.path().join("limits.yaml");
        std::fs::write(&limits, limits_yaml).expect("write limits");
        let mut args = vec![
            "--redis".to_owned(),
            redis.url(),
            "--limits".to_owned(),
            limits.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut engine = RlsEngine {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            bin,
            args,
            dir,
            starts: 0,
        };
        if let Err(e) = engine.spawn() {
            panic!("{e}\n----- engine log -----\n{}", engine.log());
        }
        engine
    }

    /// Spawn on `self.addr` (port 0 the first time) and wait for the bound address on stdout.
    fn spawn(&mut self) -> Result<(), String> {
        self.starts += 1;
        let out_path = self.dir.path().join(format!("stdout-{}", self.starts));
        let log_path = self.dir.path().join(format!("engine-{}.log", self.starts));
        let out = File::create(&out_path).expect("engine stdout");
        let log = File::create(&log_path).expect("engine log");
        let mut child = Command::new(&self.bin)
            .arg("--listen")
            .arg(self.addr.to_string())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        let addr = loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("palisade-rls exited during startup with {status}"));
            }
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            if let Some(line) = text.strip_suffix('\n') {
                break line
                    .trim()
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("palisade-rls printed {line:?}: {e}"))?;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "palisade-rls printed no address in {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.addr = addr;
        self.child = Some(child);
        Ok(())
    }

    /// The engine's address, `127.0.0.1:<port>` (kept across [`RlsEngine::restart`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Kill the engine (SIGKILL) and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop the engine with SIGTERM and return how it exited.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("the engine is running");
        let status = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {}: {status}", c.id());
        wait_for("palisade-rls to exit after SIGTERM", START_TIMEOUT, || {
            c.try_wait().expect("wait for palisade-rls")
        })
    }

    /// Kill the engine if running and start it again on the same port, with the same Redis and
    /// limits (the counters are Redis's, so windows carry on).
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        panic!(
            "palisade-rls did not restart on {}: {last}\n----- engine log -----\n{}",
            self.addr,
            self.log()
        );
    }

    /// This engine as an Envoy cluster named `name` (HTTP/2, for gRPC), a YAML list item for
    /// [`crate::Bootstrap::extra_cluster`].
    pub fn cluster(&self, name: &str) -> String {
        grpc_cluster(name, self.addr)
    }

    /// Every log of this engine (one per start), concatenated.
    pub fn log(&self) -> String {
        logs(self.dir.path(), "engine-", self.starts)
    }
}

impl Drop for RlsEngine {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- palisade-rls log -----\n{}\n----- end of palisade-rls log -----",
                self.log()
            );
        }
    }
}

fn logs(dir: &Path, prefix: &str, starts: u32) -> String {
    (1..=starts)
        .map(|n| {
            let text =
                std::fs::read_to_string(dir.join(format!("{prefix}{n}.log"))).unwrap_or_default();
            format!("[start {n}]\n{text}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A static HTTP/2 cluster `name` at `addr` (a gRPC service such as an RLS), as a YAML list item
/// at indentation 0 for [`crate::Bootstrap::extra_cluster`].
pub fn grpc_cluster(name: &str, addr: SocketAddr) -> String {
    let name = serde_json::Value::String(name.to_owned()).to_string();
    format!(
        r#"- name: {name}
  type: STATIC
  connect_timeout: 0.25s
  typed_extension_protocol_options:
    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
      "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
      explicit_http_config:
        http2_protocol_options: {{}}
  load_assignment:
    cluster_name: {name}
    endpoints:
    - lb_endpoints:
      - endpoint:
          address:
            socket_address: {{ address: {ip}, port_value: {port} }}
"#,
        ip = addr.ip(),
        port = addr.port()
    )
}

/// A blocking RLS v3 client (tonic on its own single-thread runtime). The channel connects
/// lazily and reconnects by itself, so one client outlives an engine restart.
pub struct RlsClient {
    rt: tokio::runtime::Runtime,
    client: RateLimitServiceClient<tonic::transport::Channel>,
}

impl RlsClient {
    /// A client of `addr`; each call fails after `timeout` (`DEADLINE_EXCEEDED`, or
    /// `UNAVAILABLE` when nothing listens).
    pub fn connect(addr: SocketAddr, timeout: Duration) -> RlsClient {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let channel = {
            let _guard = rt.enter();
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("endpoint")
                .connect_timeout(timeout)
                .timeout(timeout)
                .connect_lazy()
        };
        RlsClient {
            rt,
            client: RateLimitServiceClient::new(channel),
        }
    }

    /// One `ShouldRateLimit`.
    pub fn should_rate_limit(
        &mut self,
        req: RateLimitRequest,
    ) -> Result<RateLimitResponse, tonic::Status> {
        let client = &mut self.client;
        self.rt
            .block_on(client.should_rate_limit(req))
            .map(tonic::Response::into_inner)
    }
}
