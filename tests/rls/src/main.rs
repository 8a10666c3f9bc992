//! `palisade-rls`: Envoy's rate limit service (RLS v3) over Kuadrant's limitador with Redis
//! storage, for Palisade's end-to-end tests (tests/harness/src/rls.rs starts it).
//!
//! ```text
//! palisade-rls --listen 127.0.0.1:0 --redis redis://127.0.0.1:6379 --limits limits.yaml \
//!   [--rate-limit-headers none|draft-version03]
//! ```
//!
//! It also takes the subset of limitador-server's command line that a Redis-backed RLS uses, so
//! the compose demo runs either this image or the official Limitador image with one `command`:
//!
//! ```text
//! palisade-rls [--rls-ip 0.0.0.0] [--rls-port 8081] [--rate-limit-headers DRAFT_VERSION_03] \
//!   limits.yaml redis redis://redis:6379
//! ```
//!
//! Prints its bound address (`127.0.0.1:PORT`) as one line on stdout once it accepts
//! connections; exits 0 on SIGTERM or SIGINT; exits 1 on bad arguments, an unreadable limits
//! file or a Redis it cannot reach at startup. Test-only: production runs the official
//! Limitador server or envoyproxy/ratelimit.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use limitador::storage::redis::AsyncRedisStorage;
use limitador::AsyncRateLimiter;
use palisade_rls::engine::{parse_limits, Engine, RateLimitHeaders};
use palisade_rls::server::rate_limit_service_server::RateLimitServiceServer;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

#[derive(Parser)]
#[command(
    name = "palisade-rls",
    about = "RLS v3 over limitador + Redis (test engine)"
)]
struct Args {
    /// Address to listen on (port 0: any free port; the bound address is printed).
    #[arg(long, conflicts_with_all = ["rls_ip", "rls_port"])]
    listen: Option<SocketAddr>,
    /// Address to listen on, as limitador-server's `--rls-ip` (default 127.0.0.1 here).
    #[arg(long)]
    rls_ip: Option<IpAddr>,
    /// Port to listen on, as limitador-server's `--rls-port` (default 0: any free port).
    #[arg(long)]
    rls_port: Option<u16>,
    /// Redis URL of the counters (default redis://127.0.0.1:6379).
    #[arg(long, conflicts_with = "storage")]
    redis: Option<String>,
    /// Limitador limits file (YAML).
    #[arg(long, conflicts_with = "limits_file")]
    limits: Option<PathBuf>,
    /// The limits file, as limitador-server's first argument.
    #[arg(value_name = "LIMITS_FILE")]
    limits_file: Option<PathBuf>,
    /// The storage, as limitador-server's: `redis <URL>`, the only one this engine has.
    #[arg(value_name = "STORAGE", num_args = 0..=2)]
    storage: Vec<String>,
    /// Rate limit headers added to every answer (as limitador-server's --rate-limit-headers).
    #[arg(long, value_enum, default_value_t = Headers::None)]
    rate_limit_headers: Headers,
    /// Redis connect and response timeout, milliseconds: past it a check answers UNAVAILABLE.
    #[arg(long, default_value_t = 500)]
    redis_timeout_ms: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Headers {
    #[value(alias = "NONE")]
    None,
    #[value(alias = "DRAFT_VERSION_03")]
    DraftVersion03,
}

/// What the two command-line forms resolve to.
struct Settings {
    listen: SocketAddr,
    redis: String,
    limits: PathBuf,
}

impl Args {
    fn settings(&self) -> Result<Settings, String> {
        let listen = self.listen.unwrap_or_else(|| {
            SocketAddr::new(
                self.rls_ip.unwrap_or(IpAddr::from([127, 0, 0, 1])),
                self.rls_port.unwrap_or(0),
            )
        });
        let limits = self
            .limits
            .clone()
            .or_else(|| self.limits_file.clone())
            .ok_or("a limits file is required (--limits FILE, or LIMITS_FILE)")?;
        let redis = match (self.redis.as_deref(), self.storage.as_slice()) {
            (Some(url), _) => url.to_owned(),
            (None, []) => "redis://127.0.0.1:6379".to_owned(),
            (None, [kind, url]) if kind == "redis" => url.clone(),
            (None, other) => {
                return Err(format!(
                    "storage {:?}: only `redis <URL>` is supported",
                    other.join(" ")
                ))
            }
        };
        Ok(Settings {
            listen,
            redis,
            limits,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade-rls: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let settings = args.settings()?;
    let text = std::fs::read_to_string(&settings.limits)
        .map_err(|e| format!("{}: {e}", settings.limits.display()))?;
    let limits = parse_limits(&text)?;
    let timeout = Duration::from_millis(args.redis_timeout_ms);
    let client =
        redis::Client::open(settings.redis.as_str()).map_err(|e| format!("--redis: {e}"))?;
    // One quick retry and bounded timeouts: with Redis down a check fails fast (UNAVAILABLE)
    // instead of waiting out the default exponential reconnects; the manager reconnects on the
    // next command once Redis is back.
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout);
    let manager = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| format!("redis {}: {e}", settings.redis))?;
    let storage = AsyncRedisStorage::new_with_conn_manager(manager)
        .await
        .map_err(|e| format!("redis {}: {e}", settings.redis))?;
    let limiter = AsyncRateLimiter::new_with_storage(Box::new(storage));
    limiter
        .configure_with(limits)
        .await
        .map_err(|e| format!("limits: {e}"))?;
    let headers = match args.rate_limit_headers {
        Headers::None => RateLimitHeaders::None,
        Headers::DraftVersion03 => RateLimitHeaders::DraftVersion03,
    };

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", settings.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{addr}")
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string())?;
    }
    // SIGTERM or SIGINT: stop accepting, let answers in flight finish, then exit even if a
    // client keeps its connection open (an idle HTTP/2 client may never act on GOAWAY).
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(RateLimitServiceServer::new(Engine::new(limiter, headers)))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                let _ = stopped.await;
            },
        );
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map_err(|e| format!("serve: {e}")),
        () = shutdown() => {}
    }
    let _ = stop.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(result) => result.map_err(|e| format!("serve: {e}")),
        Err(_) => Ok(()),
    }
}

/// How long answers in flight may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
#[path = "main_tests.rs"]
mod tests;
