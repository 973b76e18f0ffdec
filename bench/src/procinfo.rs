//! Another process's CPU time and resident memory, as the load generator samples them at the
//! edges of each measurement window.

use std::time::Duration;

use crate::sys;

/// How a CPU time was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuSource {
    /// The process's CPU-time clock: nanosecond resolution.
    Clock,
    /// `utime + stime` from `/proc/PID/stat`: clock-tick (usually 10 ms) resolution.
    ProcStat,
}

/// The CPU time (user + system, all threads, including finished ones) that process `pid` has
/// used so far.
pub fn cpu_time(pid: i32) -> Option<(Duration, CpuSource)> {
    if let Some(d) = sys::process_cpu_clock(pid) {
        return Some((d, CpuSource::Clock));
    }
    proc_stat_cpu_time(pid).map(|d| (d, CpuSource::ProcStat))
}

/// `utime + stime` of `/proc/PID/stat`.
pub fn proc_stat_cpu_time(pid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = sys::clock_ticks_per_second();
    Some(Duration::from_nanos(
        (utime + stime).saturating_mul(1_000_000_000) / ticks,
    ))
}

/// The resident set size of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id() as i32;
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(proc_stat_cpu_time(pid).is_some());
        assert!(cpu_time(pid).is_some());
    }
}
