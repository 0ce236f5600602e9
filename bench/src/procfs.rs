//! Process measurements from Linux's /proc: CPU time (utime + stime of `/proc/PID/stat`) and
//! resident memory (`VmRSS` of `/proc/PID/status`), for the generator itself and for local
//! servers given by pid.

use crate::BenchError;

/// Clock ticks per second of `/proc/PID/stat` times (`sysconf(_SC_CLK_TCK)`).
fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// utime + stime of a `/proc/.../stat` text, seconds.
pub fn parse_stat_cpu_seconds(stat: &str) -> Result<f64, BenchError> {
    // The command name (field 2) may contain spaces and parentheses: fields after the last ')'.
    let after = stat
        .rsplit_once(')')
        .ok_or_else(|| BenchError::Proc("stat has no ')'".into()))?
        .1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3 (index 0 here); utime is field 14, stime field 15.
    let get = |i: usize| -> Result<u64, BenchError> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| BenchError::Proc(format!("stat field {} unreadable", i + 3)))
    };
    let ticks = get(11)? + get(12)?;
    Ok(ticks as f64 / ticks_per_second())
}

/// CPU seconds (user + system) used so far by process `pid`.
pub fn cpu_seconds(pid: u32) -> Result<f64, BenchError> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| BenchError::Proc(format!("/proc/{pid}/stat: {e}")))?;
    parse_stat_cpu_seconds(&s)
}

/// CPU seconds used so far by this process (all threads).
pub fn self_cpu_seconds() -> Result<f64, BenchError> {
    cpu_seconds(std::process::id())
}

/// Resident set size of process `pid`, bytes.
pub fn rss_bytes(pid: u32) -> Result<u64, BenchError> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| BenchError::Proc(format!("/proc/{pid}/status: {e}")))?;
    parse_status_rss_bytes(&s)
}

/// `VmRSS` of a `/proc/.../status` text, bytes.
pub fn parse_status_rss_bytes(status: &str) -> Result<u64, BenchError> {
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| BenchError::Proc("no VmRSS line".into()))?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| BenchError::Proc(format!("bad line {line:?}")))?;
    Ok(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    1 0 100 1000 200 18446744073709551615";
        let s = parse_stat_cpu_seconds(stat).unwrap();
        assert!((s - 300.0 / ticks_per_second()).abs() < 1e-9);
        assert!(parse_stat_cpu_seconds("garbage").is_err());
    }

    #[test]
    fn reads_own_process() {
        let status = "Name:\tx\nVmRSS:\t   2048 kB\n";
        assert_eq!(parse_status_rss_bytes(status).unwrap(), 2048 * 1024);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
        // Burn a little CPU so the counter is visibly non-decreasing.
        let a = self_cpu_seconds().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(self_cpu_seconds().unwrap() >= a);
    }
}
