//! CPU time and resident memory of a process, from `/proc`.

use std::time::Instant;

/// One reading of a process's CPU time.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: Instant,
    /// utime + stime, in clock ticks.
    ticks: u64,
}

/// `pid` = None reads the harness itself.
fn stat_path(pid: Option<u32>) -> String {
    match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    }
}

/// Reads utime + stime (fields 14 and 15 of `/proc/PID/stat`, all threads).
pub fn cpu_sample(pid: Option<u32>) -> Option<CpuSample> {
    let s = std::fs::read_to_string(stat_path(pid)).ok()?;
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 3 (state) is f[0], so field n is f[n - 3].
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(CpuSample {
        at: Instant::now(),
        ticks: utime + stime,
    })
}

/// CPU use between two samples, in percent of one core.
pub fn cpu_percent(a: &CpuSample, b: &CpuSample) -> f64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&hz| hz > 0)
        .map_or(100.0, |hz| hz as f64);
    let secs = b.at.duration_since(a.at).as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    (b.ticks.saturating_sub(a.ticks) as f64 / hz) / secs * 100.0
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let s = std::fs::read_to_string(path).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Pins the calling thread (and threads it starts later) to one CPU.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    set.set(cpu).map_err(std::io::Error::from)?;
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let a = cpu_sample(None).unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = cpu_sample(None).unwrap();
        assert!(cpu_percent(&a, &b) >= 0.0);
        assert!(rss_kib(None).unwrap() > 0);
    }
}
