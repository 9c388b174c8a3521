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
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
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
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write within it (cpu is bounds-checked
    // against CPU_SETSIZE); sched_setaffinity reads `size_of::<cpu_set_t>()` bytes of it.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
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
