//! Modes built from runs: compare (the same workload against several targets in alternating
//! rounds A B A B ..., with medians, spread, ratios, and server CPU per operation and RSS for
//! local servers) and memory (load N keys, RSS growth / N per target).

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::procfs;
use crate::runner::{self, IntervalPoint, RunConfig};
use crate::stats::{new_histogram, Percentiles};
use crate::BenchError;

/// Median and range of one measure over rounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (`None` when empty).
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    /// (max - min) / median, the relative spread.
    pub fn relative(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / self.median
        }
    }
}

/// One round against one target.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// Index of the target in the compare's target list.
    pub target: usize,
    /// Round number, from 0.
    pub round: usize,
    /// Requests completed per second.
    pub throughput: f64,
    /// Latency percentiles, all commands together.
    pub latency: Percentiles,
    /// Server CPU per operation, microseconds (when the server's pid is known): the servers'
    /// CPU time over the measured window (warm-up excluded) per request completed in it.
    pub server_cpu_per_op_us: Option<f64>,
    /// Server RSS after the round, bytes (when the server's pid is known).
    pub server_rss_bytes: Option<u64>,
    /// Generator CPU in cores during the round.
    pub generator_cores: f64,
    /// Error replies in the round (all commands).
    pub errors: u64,
    /// Reads (GET, DM.GET, scans) that found their key, and reads in total.
    pub read_hits: u64,
    /// Reads in total.
    pub reads: u64,
    /// Fraction of the server's operations that crossed cores during the round (tesserad's
    /// `INFO shards` counters: remote_in / executed; `None` for other servers).
    pub cross_core: Option<f64>,
}

/// Medians over the rounds of one target, and ratios to the first target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetSummary {
    /// Target label.
    pub label: String,
    /// Throughput over rounds.
    pub throughput: Spread,
    /// p50 latency over rounds, us.
    pub p50_us: Spread,
    /// p99 latency over rounds, us.
    pub p99_us: Spread,
    /// p99.9 latency over rounds, us.
    pub p999_us: Spread,
    /// Server CPU per op over rounds, us.
    pub server_cpu_per_op_us: Option<Spread>,
    /// Largest server RSS seen, bytes.
    pub server_rss_bytes: Option<u64>,
    /// Median throughput / first target's.
    pub throughput_ratio: f64,
    /// Median p99 / first target's.
    pub p99_ratio: f64,
    /// Median server CPU per op / first target's.
    pub cpu_per_op_ratio: Option<f64>,
    /// Server CPU per op / first target's in the same round, over rounds: paired, so a drift
    /// of the machine's speed between rounds cancels out (`None` without CPU figures).
    pub cpu_per_op_ratio_paired: Option<Spread>,
    /// Server CPU with no load, percent of one core (`--idle`; `None` when not measured):
    /// timers, membership, idle spinning. Under load part of it is still spent and counted in
    /// the CPU per op.
    pub server_idle_cpu_percent: Option<f64>,
    /// Server CPU per op net of the idle CPU rate (the CPU/op if the idle work stopped under
    /// load), over rounds (`None` without `--idle`).
    pub server_cpu_per_op_net_us: Option<Spread>,
    /// Error replies over all rounds.
    pub errors: u64,
    /// Reads that hit / reads, over all rounds (`None` without reads).
    pub read_hit_ratio: Option<f64>,
    /// Cross-core fraction over rounds (tesserad only).
    pub cross_core: Option<Spread>,
}

/// Everything a compare measured.
#[derive(Debug)]
pub struct CompareOutcome {
    /// Every round, in the order run.
    pub rounds: Vec<Round>,
    /// One summary per target.
    pub targets: Vec<TargetSummary>,
    /// Latency of all rounds merged, per target (for the spectrum plot).
    pub histograms: Vec<Histogram<u64>>,
    /// Intervals of the last round, per target (for the timeline plot).
    pub last_intervals: Vec<Vec<IntervalPoint>>,
}

/// `f` summed over `pids` (`None` when there are none).
fn sum_over<T: std::iter::Sum<T>>(
    pids: &[u32],
    f: impl Fn(u32) -> Result<T, BenchError>,
) -> Result<Option<T>, BenchError> {
    if pids.is_empty() {
        return Ok(None);
    }
    pids.iter()
        .map(|&p| f(p))
        .sum::<Result<T, BenchError>>()
        .map(Some)
}

/// The CPU seconds of `pids` together, for [`runner::run_probed`] (`None` when one cannot be
/// read, e.g. a server exited).
fn cpu_probe(pids: &[u32]) -> runner::Probe {
    let pids = pids.to_vec();
    std::sync::Arc::new(move || sum_over(&pids, procfs::cpu_seconds).ok().flatten())
}

/// CPU of `pids` together over `duration` with no load, percent of one core.
fn idle_cpu_percent(pids: &[u32], duration: std::time::Duration) -> Result<f64, BenchError> {
    let start = std::time::Instant::now();
    let before = sum_over(pids, procfs::cpu_seconds)?.unwrap_or(0.0);
    std::thread::sleep(duration);
    let after = sum_over(pids, procfs::cpu_seconds)?.unwrap_or(0.0);
    Ok(100.0 * (after - before) / start.elapsed().as_secs_f64())
}

/// Runs `base`'s workload against each of its targets in turn, `rounds` times (A B A B ...).
/// `pids[i]` are target i's server processes, if local (several for a cluster: CPU time and
/// RSS are summed over them; empty when unknown). Each target is preloaded with `preload`
/// keys first. With `idle`, each target's servers' CPU with no load is measured for that long
/// after the preload. With `hdr_log_dir`, each round's interval log is written there as
/// `<label>.round<N>.hlog`.
pub fn compare(
    base: &RunConfig,
    rounds: usize,
    pids: &[Vec<u32>],
    preload: u64,
    idle: Option<std::time::Duration>,
    hdr_log_dir: Option<&Path>,
) -> Result<CompareOutcome, BenchError> {
    if rounds == 0 {
        return Err(BenchError::Config("rounds must be >= 1".into()));
    }
    base.validate()?;
    let n = base.targets.len();
    let single = |i: usize| {
        let mut c = base.clone();
        c.targets = vec![base.targets[i].clone()];
        c
    };
    for i in 0..n {
        runner::preload(&single(i), preload)?;
    }
    let mut idle_percent: Vec<Option<f64>> = vec![None; n];
    if let Some(d) = idle {
        for (i, slot) in idle_percent.iter_mut().enumerate() {
            let pid: &[u32] = pids.get(i).map_or(&[], Vec::as_slice);
            if !pid.is_empty() {
                // Let the server settle after the preload first.
                std::thread::sleep(std::time::Duration::from_millis(200));
                *slot = Some(idle_cpu_percent(pid, d)?);
            }
        }
    }
    let mut out = CompareOutcome {
        rounds: Vec::new(),
        targets: Vec::new(),
        histograms: vec![new_histogram(); n],
        last_intervals: vec![Vec::new(); n],
    };
    for round in 0..rounds {
        for i in 0..n {
            let cfg = single(i);
            let pid: &[u32] = pids.get(i).map_or(&[], Vec::as_slice);
            let counters = |t: &runner::Target| match t.protocol {
                crate::codec::Protocol::Resp => {
                    crate::route::server_counters(&t.addr, base.connect_timeout)
                }
                crate::codec::Protocol::Memcache => Ok(None),
            };
            let hops_before = counters(&base.targets[i])?;
            let cpu_before = sum_over(pid, procfs::cpu_seconds)?;
            let probe = (!pid.is_empty()).then(|| cpu_probe(pid));
            let (run, window) = match hdr_log_dir {
                Some(dir) => {
                    let name: String = base.targets[i]
                        .label
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .collect();
                    let path = dir.join(format!("{name}.round{round}.hlog"));
                    let file = std::fs::File::create(&path)
                        .map_err(|e| BenchError::Output(format!("{}: {e}", path.display())))?;
                    let mut w = std::io::BufWriter::new(file);
                    runner::run_probed(&cfg, Some(&mut w), probe)?
                }
                None => runner::run_probed(&cfg, None, probe)?,
            };
            let cpu_after = sum_over(pid, procfs::cpu_seconds)?;
            let rss = sum_over(pid, procfs::rss_bytes)?;
            let hops_after = counters(&base.targets[i])?;
            let cross_core = match (hops_before, hops_after) {
                (Some(a), Some(b)) if b.executed > a.executed => Some(
                    b.remote_in.saturating_sub(a.remote_in) as f64
                        / (b.executed - a.executed) as f64,
                ),
                _ => None,
            };
            let (mut read_hits, mut reads) = (0, 0);
            for (k, ks) in run.stats.kinds() {
                if matches!(
                    k,
                    crate::workload::OpKind::Get
                        | crate::workload::OpKind::DmGet
                        | crate::workload::OpKind::Scan
                ) {
                    read_hits += ks.ok;
                    reads += ks.ok + ks.miss;
                }
            }
            let total = run.stats.total();
            let count = total.as_ref().map_or(0, crate::stats::KindStats::count);
            let h = total.map_or_else(new_histogram, |t| t.latency);
            out.histograms[i].add(&h).expect("same bounds");
            let throughput = if run.measured_s > 0.0 {
                count as f64 / run.measured_s
            } else {
                0.0
            };
            // CPU seconds per second of the measured window over requests per second of it;
            // without a window (a run that stopped during its warm-up), the whole run's CPU.
            let server_cpu_per_op_us = match (window, cpu_before, cpu_after) {
                (Some(w), _, _) if throughput > 0.0 => Some(w.rate() * 1e6 / throughput),
                (None, Some(a), Some(b)) if count > 0 => Some((b - a) * 1e6 / count as f64),
                _ => None,
            };
            out.rounds.push(Round {
                target: i,
                round,
                throughput,
                latency: Percentiles::of(&h),
                server_cpu_per_op_us,
                server_rss_bytes: rss,
                generator_cores: run.generator_cores(),
                errors: total_errors(&run.stats),
                read_hits,
                reads,
                cross_core,
            });
            out.last_intervals[i] = run.intervals;
        }
    }
    for (i, &idle_pct) in idle_percent.iter().enumerate() {
        let rs: Vec<&Round> = out.rounds.iter().filter(|r| r.target == i).collect();
        let col = |f: &dyn Fn(&Round) -> f64| {
            Spread::of(&rs.iter().map(|r| f(r)).collect::<Vec<_>>()).expect("rounds >= 1")
        };
        let cpu: Vec<f64> = rs.iter().filter_map(|r| r.server_cpu_per_op_us).collect();
        let hops: Vec<f64> = rs.iter().filter_map(|r| r.cross_core).collect();
        let reads: u64 = rs.iter().map(|r| r.reads).sum();
        out.targets.push(TargetSummary {
            label: base.targets[i].label.clone(),
            throughput: col(&|r| r.throughput),
            p50_us: col(&|r| r.latency.p50_us),
            p99_us: col(&|r| r.latency.p99_us),
            p999_us: col(&|r| r.latency.p999_us),
            server_cpu_per_op_us: Spread::of(&cpu),
            server_rss_bytes: rs.iter().filter_map(|r| r.server_rss_bytes).max(),
            throughput_ratio: 1.0,
            p99_ratio: 1.0,
            cpu_per_op_ratio: None,
            cpu_per_op_ratio_paired: None,
            server_idle_cpu_percent: idle_pct,
            server_cpu_per_op_net_us: idle_pct.and_then(|idle| {
                // The idle CPU rate (seconds per second) over the throughput.
                let net: Vec<f64> = rs
                    .iter()
                    .filter_map(|r| {
                        let cpu = r.server_cpu_per_op_us?;
                        (r.throughput > 0.0).then(|| cpu - idle / 100.0 * 1e6 / r.throughput)
                    })
                    .collect();
                Spread::of(&net)
            }),
            errors: rs.iter().map(|r| r.errors).sum(),
            read_hit_ratio: (reads > 0)
                .then(|| rs.iter().map(|r| r.read_hits).sum::<u64>() as f64 / reads as f64),
            cross_core: Spread::of(&hops),
        });
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let first = out.targets[0].clone();
    for t in &mut out.targets {
        t.throughput_ratio = ratio(t.throughput.median, first.throughput.median);
        t.p99_ratio = ratio(t.p99_us.median, first.p99_us.median);
        t.cpu_per_op_ratio = match (t.server_cpu_per_op_us, first.server_cpu_per_op_us) {
            (Some(a), Some(b)) => Some(ratio(a.median, b.median)),
            _ => None,
        };
    }
    for i in 0..n {
        let paired = paired_ratios(&out.rounds, i, |r| r.server_cpu_per_op_us);
        out.targets[i].cpu_per_op_ratio_paired = Spread::of(&paired);
    }
    Ok(out)
}

/// Per round, `f` of target `i` over `f` of target 0 in the same round (rounds where either
/// is missing or target 0's is 0 are left out).
pub fn paired_ratios(rounds: &[Round], i: usize, f: impl Fn(&Round) -> Option<f64>) -> Vec<f64> {
    rounds
        .iter()
        .filter(|r| r.target == i)
        .filter_map(|r| {
            let first = rounds
                .iter()
                .find(|b| b.target == 0 && b.round == r.round)?;
            let (a, b) = (f(r)?, f(first)?);
            (b > 0.0).then(|| a / b)
        })
        .collect()
}

fn total_errors(stats: &crate::stats::Stats) -> u64 {
    stats.kinds().map(|(_, s)| s.errors).sum()
}

/// Formats the compare summary as a Markdown table, followed by a warning line for every
/// target that got error replies.
pub fn format_compare(out: &CompareOutcome) -> String {
    let mut s = String::from(
        "| target | ops/s median (min-max) | ratio | p50 us | p99 us | p99 ratio | p99.9 us | server CPU/op us (min-max) | CPU/op ratio | server RSS MiB | read hits % | errors | cross-core % |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for t in &out.targets {
        let opt = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
        let _ = writeln!(
            s,
            "| {} | {:.0} ({:.0}-{:.0}) | {:.2} | {:.1} | {:.1} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} |",
            t.label,
            t.throughput.median,
            t.throughput.min,
            t.throughput.max,
            t.throughput_ratio,
            t.p50_us.median,
            t.p99_us.median,
            t.p99_ratio,
            t.p999_us.median,
            t.server_cpu_per_op_us.map_or("-".to_string(), |c| format!(
                "{:.2} ({:.2}-{:.2})",
                c.median, c.min, c.max
            )),
            opt(t.cpu_per_op_ratio, 2),
            opt(t.server_rss_bytes.map(|b| b as f64 / 1_048_576.0), 1),
            opt(t.read_hit_ratio.map(|r| r * 100.0), 1),
            t.errors,
            opt(t.cross_core.map(|c| c.median * 100.0), 1),
        );
    }
    for t in out.targets.iter().skip(1) {
        if let Some(p) = t.cpu_per_op_ratio_paired {
            let _ = writeln!(
                s,
                "\n{}: server CPU/op / {}'s in the same round, paired over rounds: {:.3} ({:.3}-{:.3}).",
                t.label, out.targets[0].label, p.median, p.min, p.max
            );
        }
    }
    for t in out
        .targets
        .iter()
        .filter(|t| t.server_idle_cpu_percent.is_some())
    {
        let _ = writeln!(
            s,
            "\n{}: server CPU with no load {:.2}% of one core; CPU/op net of it {} us.",
            t.label,
            t.server_idle_cpu_percent.unwrap_or(0.0),
            t.server_cpu_per_op_net_us
                .map_or("-".to_string(), |c| format!(
                    "{:.2} ({:.2}-{:.2})",
                    c.median, c.min, c.max
                )),
        );
    }
    for t in out.targets.iter().filter(|t| t.errors > 0) {
        let _ = writeln!(
            s,
            "\nWARNING: {} answered {} requests with an error reply (counted in the figures above).",
            t.label, t.errors
        );
    }
    s
}

/// RSS growth of one target when loading keys.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryResult {
    /// Target label.
    pub label: String,
    /// Keys loaded.
    pub keys: u64,
    /// Value size, bytes.
    pub value_bytes: usize,
    /// RSS before loading, bytes.
    pub rss_before: u64,
    /// RSS after loading, bytes.
    pub rss_after: u64,
    /// (after - before) / keys.
    pub bytes_per_item: f64,
    /// Items the server says it holds after loading (`DBSIZE`, memcached's `curr_items`), so
    /// a load that did not store what it claims shows; `None` if the server would not say.
    pub items_reported: Option<u64>,
}

/// Asks the server how many items it holds: `DBSIZE` (RESP) or `stats` -> `curr_items`
/// (memcached). `None` when the reply has no such number.
pub fn item_count(
    t: &runner::Target,
    timeout: std::time::Duration,
) -> Result<Option<u64>, BenchError> {
    use std::io::{Read, Write};
    let mut s = runner::connect_blocking(t, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let (req, end): (&[u8], &[u8]) = match t.protocol {
        crate::codec::Protocol::Resp => (b"DBSIZE\r\n", b"\r\n"),
        crate::codec::Protocol::Memcache => (b"stats\r\n", b"END\r\n"),
    };
    s.write_all(req)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.ends_with(end) {
        if buf.len() > 1 << 20 {
            return Ok(None);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(match t.protocol {
        crate::codec::Protocol::Resp => text.strip_prefix(':').and_then(|v| v.trim().parse().ok()),
        crate::codec::Protocol::Memcache => text
            .lines()
            .find_map(|l| l.strip_prefix("STAT curr_items "))
            .and_then(|v| v.trim().parse().ok()),
    })
}

/// Loads `keys` keys (`{prefix}N`, values of the workload's minimum size) into each target and
/// reports RSS growth per key. `pids[i]` is required for every target.
pub fn memory(
    base: &RunConfig,
    pids: &[Option<u32>],
    keys: u64,
) -> Result<Vec<MemoryResult>, BenchError> {
    if keys == 0 {
        return Err(BenchError::Config("memory mode needs keys >= 1".into()));
    }
    let mut results = Vec::new();
    for (i, t) in base.targets.iter().enumerate() {
        let pid = pids.get(i).copied().flatten().ok_or_else(|| {
            BenchError::Config(format!("memory mode needs --server-pid for {}", t.label))
        })?;
        let mut cfg = base.clone();
        cfg.targets = vec![t.clone()];
        cfg.workload.value_size.max = cfg.workload.value_size.min;
        let before = procfs::rss_bytes(pid)?;
        runner::preload(&cfg, keys)?;
        let after = procfs::rss_bytes(pid)?;
        let items_reported = item_count(t, base.connect_timeout)?;
        results.push(MemoryResult {
            label: t.label.clone(),
            keys,
            value_bytes: cfg.workload.value_size.min,
            rss_before: before,
            rss_after: after,
            bytes_per_item: after.saturating_sub(before) as f64 / keys as f64,
            items_reported,
        });
    }
    Ok(results)
}

/// Formats memory results as a Markdown table, with ratios to the first target.
pub fn format_memory(rs: &[MemoryResult]) -> String {
    let mut s = String::from(
        "| target | keys | items the server reports | value B | RSS before MiB | RSS after MiB | bytes/item | ratio |\n|---|---|---|---|---|---|---|---|\n",
    );
    let first = rs.first().map_or(0.0, |r| r.bytes_per_item);
    for r in rs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} |",
            r.label,
            r.keys,
            r.items_reported.map_or("-".to_string(), |n| n.to_string()),
            r.value_bytes,
            r.rss_before as f64 / 1_048_576.0,
            r.rss_after as f64 / 1_048_576.0,
            r.bytes_per_item,
            if first > 0.0 {
                r.bytes_per_item / first
            } else {
                0.0
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_median_and_range() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert!((s.median - 2.5).abs() < 1e-12);
        assert!((s.relative() - 1.2).abs() < 1e-12);
        assert!(Spread::of(&[]).is_none());
    }

    #[test]
    fn sums_over_every_pid_of_a_target() {
        let f = |p: u32| -> Result<u64, BenchError> {
            if p == 9 {
                Err(BenchError::Proc("gone".into()))
            } else {
                Ok(u64::from(p) * 10)
            }
        };
        assert_eq!(sum_over(&[], f).unwrap(), None);
        assert_eq!(sum_over(&[1], f).unwrap(), Some(10));
        assert_eq!(sum_over(&[1, 2, 3], f).unwrap(), Some(60));
        // One process that cannot be read fails the whole figure rather than undercounting.
        assert!(sum_over(&[1, 9], f).is_err());
        // Our own process: the sum of two reads of one pid is about twice one read.
        let me = std::process::id();
        let one = sum_over(&[me], procfs::rss_bytes).unwrap().unwrap();
        let two = sum_over(&[me, me], procfs::rss_bytes).unwrap().unwrap();
        assert!(two >= one && two <= 3 * one, "{one} {two}");
    }

    fn round(target: usize, round: usize, cpu: Option<f64>) -> Round {
        Round {
            target,
            round,
            throughput: 1.0,
            latency: Percentiles::of(&new_histogram()),
            server_cpu_per_op_us: cpu,
            server_rss_bytes: None,
            generator_cores: 0.0,
            errors: 0,
            read_hits: 0,
            reads: 0,
            cross_core: None,
        }
    }

    #[test]
    fn paired_ratios_divide_within_each_round() {
        // Target 0 drifts from 2 to 4 us/op between rounds; target 1 is always 1.5x it. The
        // ratio of medians would mix rounds; the paired ratios are 1.5 in every round.
        let rounds = vec![
            round(0, 0, Some(2.0)),
            round(1, 0, Some(3.0)),
            round(0, 1, Some(4.0)),
            round(1, 1, Some(6.0)),
            round(0, 2, Some(3.0)),
            round(1, 2, Some(4.5)),
            // A round with a missing figure is left out, not counted as 0.
            round(0, 3, None),
            round(1, 3, Some(9.0)),
        ];
        let r = paired_ratios(&rounds, 1, |r| r.server_cpu_per_op_us);
        assert_eq!(r.len(), 3);
        assert!(r.iter().all(|x| (x - 1.5).abs() < 1e-12), "{r:?}");
        let own = paired_ratios(&rounds, 0, |r| r.server_cpu_per_op_us);
        assert_eq!(own, vec![1.0, 1.0, 1.0]);
        assert!(paired_ratios(&rounds, 2, |r| r.server_cpu_per_op_us).is_empty());
    }

    #[test]
    fn idle_cpu_of_a_sleeping_process_is_small() {
        let me = std::process::id();
        let p = idle_cpu_percent(&[me], std::time::Duration::from_millis(300)).unwrap();
        // This process sleeps meanwhile (other test threads may run: bounded loosely).
        assert!((0.0..=200.0).contains(&p), "{p}");
        assert!(idle_cpu_percent(&[u32::MAX - 1], std::time::Duration::ZERO).is_err());
    }
}

/// Server CPU while holding idle connections (performance.md P10).
#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    /// Target label.
    pub label: String,
    /// Idle connections held open.
    pub connections: usize,
    /// Seconds measured.
    pub seconds: f64,
    /// Server CPU over that time, percent of one core.
    pub cpu_percent: f64,
}

/// Opens `connections` connections to each target in turn, sends nothing for `duration`, and
/// reports the server's CPU use meanwhile. `pids[i]` is required for every target.
pub fn idle(
    base: &RunConfig,
    pids: &[Option<u32>],
    connections: usize,
    duration: std::time::Duration,
) -> Result<Vec<IdleResult>, BenchError> {
    if connections > runner::CONNECTIONS_MAX {
        return Err(BenchError::Config(format!(
            "at most {} connections",
            runner::CONNECTIONS_MAX
        )));
    }
    let mut out = Vec::new();
    for (i, t) in base.targets.iter().enumerate() {
        let pid = pids.get(i).copied().flatten().ok_or_else(|| {
            BenchError::Config(format!("idle mode needs --server-pid for {}", t.label))
        })?;
        let mut held = Vec::with_capacity(connections);
        for _ in 0..connections {
            held.push(runner::connect_blocking(t, base.connect_timeout)?);
        }
        // Let the server settle after the connection burst before measuring.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let start = std::time::Instant::now();
        let before = procfs::cpu_seconds(pid)?;
        std::thread::sleep(duration);
        let after = procfs::cpu_seconds(pid)?;
        let seconds = start.elapsed().as_secs_f64();
        drop(held);
        out.push(IdleResult {
            label: t.label.clone(),
            connections,
            seconds,
            cpu_percent: 100.0 * (after - before) / seconds,
        });
    }
    Ok(out)
}

/// Formats idle results as a Markdown table.
pub fn format_idle(rs: &[IdleResult]) -> String {
    let mut s = String::from(
        "| target | idle connections | seconds | server CPU % of one core |\n|---|---|---|---|\n",
    );
    for r in rs {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {:.2} |",
            r.label, r.connections, r.seconds, r.cpu_percent
        );
    }
    s
}
