//! `palisade-upstream [--listen ADDR]`: runs the echo server (see the
//! library docs) until SIGTERM or SIGINT, then exits with status 0.
//!
//! Once listening it prints exactly one line to stdout,
//! `palisade-upstream listening on <addr>`, with the address actually bound
//! (useful with port 0).

use std::io::{self, Write};
use std::process::ExitCode;

use palisade_upstream::Upstream;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

const USAGE: &str = "\
usage: palisade-upstream [--listen ADDR]

HTTP/1.1 echo server used as the upstream in Palisade's end-to-end tests.

options:
  --listen ADDR   address to bind (default 127.0.0.1:8080; port 0 = any)
  -h, --help      print this help
";

/// What the command line asked for.
enum Command {
    Serve { listen: String },
    Help,
}

fn main() -> ExitCode {
    let command = match parse_args(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("palisade-upstream: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => write_stdout(USAGE),
        Command::Serve { listen } => serve(&listen),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("palisade-upstream: {err}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut listen = DEFAULT_LISTEN.to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--listen" => {
                listen = args
                    .next()
                    .ok_or_else(|| "--listen needs an address".to_owned())?;
            }
            other => match other.strip_prefix("--listen=") {
                Some(value) => listen = value.to_owned(),
                None => return Err(format!("unexpected argument {other:?}")),
            },
        }
    }
    Ok(Command::Serve { listen })
}

fn serve(listen: &str) -> io::Result<()> {
    // Signal handlers are installed before announcing readiness, so a
    // SIGTERM sent right after the line is printed still exits cleanly.
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let shutdown = signals.block_on(async { ShutdownSignal::install() })?;

    let upstream = Upstream::start(listen)
        .map_err(|err| io::Error::new(err.kind(), format!("cannot listen on {listen}: {err}")))?;
    write_stdout(&format!(
        "palisade-upstream listening on {}\n",
        upstream.addr()
    ))?;

    signals.block_on(shutdown.recv());
    drop(upstream);
    Ok(())
}

fn write_stdout(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// SIGTERM or SIGINT (Ctrl-C on non-Unix platforms).
struct ShutdownSignal {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    #[cfg(unix)]
    fn install() -> io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignal {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> io::Result<Self> {
        Ok(ShutdownSignal {})
    }

    #[cfg(unix)]
    async fn recv(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }

    #[cfg(not(unix))]
    async fn recv(self) {
        // If Ctrl-C cannot be watched, serve until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
