//! What the kernel says about the Envoy process: CPU time and resident memory, from `/proc`.

use std::process::Command;
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat`'s `utime`/`stime` (`sysconf(_SC_CLK_TCK)`).
///
/// Read once through `getconf CLK_TCK` (the workspace denies `unsafe`, so no `libc::sysconf`);
/// Linux has reported 100 on every mainstream architecture for decades, which is the fallback.
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// User + system CPU time the whole process (every thread) has used so far, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    parse_cpu_ticks(&text).ok_or_else(|| format!("unexpected format of {path}: {text}"))
}

/// `utime + stime` from the text of `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may itself contain spaces or parentheses, so fields are counted after the last
/// `)`: there, field 3 (`state`) is index 0, so `utime` (field 14) is index 11 and `stime` 12.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Converts tick counts to time.
#[derive(Debug, Clone, Copy)]
pub struct Ticks {
    pub per_second: u64,
}

impl Ticks {
    pub fn to_duration(self, ticks: u64) -> Duration {
        Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / self.per_second.max(1))
    }
}

/// Resident set size of the process, in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    parse_rss(&text).ok_or_else(|| format!("no VmRSS in {path}"))
}

fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Machine-wide CPU time from the `cpu` line of `/proc/stat`, in clock ticks summed over CPUs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemTicks {
    /// user + nice + system + irq + softirq (guest time is inside user).
    pub busy: u64,
    /// Time the hypervisor gave this VM's CPUs to someone else.
    pub steal: u64,
    /// Everything, idle and iowait included.
    pub total: u64,
}

pub fn system_ticks() -> Result<SystemTicks, String> {
    let text =
        std::fs::read_to_string("/proc/stat").map_err(|e| format!("read /proc/stat: {e}"))?;
    parse_system_ticks(&text).ok_or_else(|| "no cpu line in /proc/stat".to_owned())
}

fn parse_system_ticks(stat: &str) -> Option<SystemTicks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = at(0) + at(1) + at(2) + at(5) + at(6);
    let steal = at(7);
    Some(SystemTicks {
        busy,
        steal,
        total: busy + steal + at(3) + at(4),
    })
}

/// `nproc` and the CPU model, for the report header.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".to_owned());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpus} CPUs, {model}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (envoy (main) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 \
                    5 0 99 1000 200 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_process_has_readable_cpu_and_rss() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_ok());
        assert!(rss_bytes(pid).unwrap() > 0);
        assert_eq!(
            parse_rss("Name:\tx\nVmRSS:\t   2048 kB\n"),
            Some(2 * 1024 * 1024)
        );
    }

    #[test]
    fn system_ticks_add_up() {
        let t =
            parse_system_ticks("cpu  10 1 5 100 2 3 4 7 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n").unwrap();
        assert_eq!((t.busy, t.steal, t.total), (23, 7, 132));
        assert!(system_ticks().unwrap().total > 0);
    }

    #[test]
    fn ticks_convert_to_time() {
        let t = Ticks { per_second: 100 };
        assert_eq!(t.to_duration(250), Duration::from_millis(2500));
    }
}
