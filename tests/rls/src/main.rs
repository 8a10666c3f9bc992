//! `palisade-rls`: Envoy's rate limit service (RLS v3) over Kuadrant's limitador with Redis
//! storage, for Palisade's end-to-end tests (tests/harness/src/rls.rs starts it).
//!
//! ```text
//! palisade-rls --listen 127.0.0.1:0 --redis redis://127.0.0.1:6379 --limits limits.yaml \
//!   [--rate-limit-headers none|draft-version-03]
//! ```
//!
//! Prints its bound address (`127.0.0.1:PORT`) as one line on stdout once it accepts
//! connections; exits 0 on SIGTERM or SIGINT; exits 1 on bad arguments, an unreadable limits
//! file or a Redis it cannot reach at startup. Test-only: production runs the official
//! Limitador server or envoyproxy/ratelimit.

use std::io::Write;
use std::net::SocketAddr;
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
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Redis URL of the counters.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Limitador limits file (YAML).
    #[arg(long)]
    limits: PathBuf,
    /// Rate limit headers added to every answer (as limitador-server's --rate-limit-headers).
    #[arg(long, value_enum, default_value_t = Headers::None)]
    rate_limit_headers: Headers,
    /// Redis connect and response timeout, milliseconds: past it a check answers UNAVAILABLE.
    #[arg(long, default_value_t = 500)]
    redis_timeout_ms: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Headers {
    None,
    DraftVersion03,
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
    let text = std::fs::read_to_string(&args.limits)
        .map_err(|e| format!("{}: {e}", args.limits.display()))?;
    let limits = parse_limits(&text)?;
    let timeout = Duration::from_millis(args.redis_timeout_ms);
    let client = redis::Client::open(args.redis.as_str()).map_err(|e| format!("--redis: {e}"))?;
    // One quick retry and bounded timeouts: with Redis down a check fails fast (UNAVAILABLE)
    // instead of waiting out the default exponential reconnects; the manager reconnects on the
    // next command once Redis is back.
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout);
    let manager = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| format!("redis {}: {e}", args.redis))?;
    let storage = AsyncRedisStorage::new_with_conn_manager(manager)
        .await
        .map_err(|e| format!("redis {}: {e}", args.redis))?;
    let limiter = AsyncRateLimiter::new_with_storage(Box::new(storage));
    limiter
        .configure_with(limits)
        .await
        .map_err(|e| format!("limits: {e}"))?;
    let headers = match args.rate_limit_headers {
        Headers::None => RateLimitHeaders::None,
        Headers::DraftVersion03 => RateLimitHeaders::DraftVersion03,
    };

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", args.listen))?;
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
