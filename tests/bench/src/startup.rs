//! Time to ready and resident memory of an Envoy with a given filter chain.
//!
//! The harness's readiness poll backs off to 100 ms between checks, too coarse to time a start
//! that should take well under 2 s. So Envoy is started through [`TimedRunner`], a [`Runner`] that
//! notes the instant it spawns Envoy and polls `/ready` on its own every 2 ms from then on; the
//! harness still does its usual checks (ready and listener bound) before handing the Envoy back.

use crate::load::{self, Load, RequestTemplate};
use crate::procfs;
use palisade_harness::envoy::{Launch, LocalBinary, Process, Runner};
use palisade_harness::{client, Bootstrap, Envoy, EnvoyOptions, Filter, Route};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const POLL: Duration = Duration::from_millis(2);
const GIVE_UP: Duration = Duration::from_secs(60);

/// Spawns the local Envoy and times how long until its admin port answers `/ready` with 200.
struct TimedRunner {
    inner: LocalBinary,
    stop: Arc<AtomicBool>,
    watch: Mutex<Option<(Instant, JoinHandle<Option<Instant>>)>>,
}

impl Runner for TimedRunner {
    fn spawn(&self, launch: &Launch, log: File) -> io::Result<Process> {
        let admin_file = launch
            .args
            .windows(2)
            .find(|w| w[0] == "--admin-address-path")
            .map(|w| PathBuf::from(&w[1]));
        let spawned = Instant::now();
        let process = self.inner.spawn(launch, log)?;
        let stop = Arc::clone(&self.stop);
        let watcher = std::thread::spawn(move || poll_ready(admin_file, &stop));
        *self.watch.lock().unwrap() = Some((spawned, watcher));
        Ok(process)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn validate(&self, config: &Path, workdir: &Path) -> io::Result<std::process::Output> {
        self.inner.validate(config, workdir)
    }
}

fn poll_ready(admin_file: Option<PathBuf>, stop: &AtomicBool) -> Option<Instant> {
    let admin_file = admin_file?;
    let deadline = Instant::now() + GIVE_UP;
    let mut admin = None;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        if admin.is_none() {
            admin = std::fs::read_to_string(&admin_file)
                .ok()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty());
        }
        if let Some(addr) = &admin {
            if client::get(&format!("http://{addr}/ready")).is_ok_and(|r| r.status == 200) {
                return Some(Instant::now());
            }
        }
        std::thread::sleep(POLL);
    }
    None
}

/// One start: time to ready, and resident memory after some traffic.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub ready: Duration,
    pub rss_bytes: u64,
}

/// Start Envoy with `filters` (direct-response route, `concurrency` workers), time it to ready,
/// send `requests` requests over 8 connections so every worker has served traffic, then read its
/// resident memory.
pub fn sample(
    rt: &Runtime,
    filters: &[Filter],
    concurrency: usize,
    requests: u64,
    template: &RequestTemplate,
) -> Result<Sample, String> {
    let mut bootstrap = Bootstrap::new();
    for f in filters {
        bootstrap = bootstrap.filter(f.clone());
    }
    let yaml = bootstrap
        .route(Route::direct("bench", "/", 200, "ok"))
        .render(1);
    let runner = TimedRunner {
        inner: LocalBinary::from_env(),
        stop: Arc::new(AtomicBool::new(false)),
        watch: Mutex::new(None),
    };
    let opts = EnvoyOptions {
        concurrency,
        log_level: "warning".to_owned(),
        component_log_level: None,
    };
    let started = Envoy::start_with(&yaml, &opts, &runner);
    if started.is_err() {
        // On success the poller stops by itself: it has seen (or is about to see) `/ready`.
        runner.stop.store(true, Ordering::Relaxed);
    }
    let watch = runner.watch.lock().unwrap().take();
    let envoy = started.map_err(|e| e.to_string())?;
    let (spawned, watcher) = watch.ok_or("Envoy was never spawned")?;
    let ready_at = watcher
        .join()
        .ok()
        .flatten()
        .ok_or("the /ready poller saw no 200")?;
    let measured = load::run(
        rt,
        Load {
            port: envoy.listener_port(),
            pid: envoy.pid(),
            connections: 8,
            warmup: 0,
            requests,
        },
        template,
    )?;
    if measured.failures.errors > 0 {
        return Err(format!("traffic failed: {}", measured.failures));
    }
    Ok(Sample {
        ready: ready_at.saturating_duration_since(spawned),
        rss_bytes: procfs::rss_bytes(envoy.pid())?,
    })
}
