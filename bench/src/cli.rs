//! The command line of `tessera-bench` (parsed with clap, here so it is testable; the binary
//! only calls [`main_with_args`]). Subcommands: `run`, `compare`, `memory`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::compare::{self, CompareOutcome, IdleResult, MemoryResult, Round, TargetSummary};
use crate::plot;
use crate::report::{write_json, Machine, RunReport};
use crate::runner::{self, LoadModel, Pinning, RunConfig, Target};
use crate::schedule::Arrival;
use crate::stats::{format_table, summarize};
use crate::workload::{parse_mix, KeyDist, ValueSize, Workload, Ycsb};
use crate::BenchError;

/// Latency benchmarking harness for RESP servers and memcached.
#[derive(Debug, Parser)]
#[command(name = "tessera-bench", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One run; connections are spread over all targets.
    Run(RunArgs),
    /// The same workload against each target in alternating rounds (A B A B ...).
    Compare(CompareArgs),
    /// Load N keys into each target and report RSS growth per key.
    Memory(MemoryArgs),
    /// Hold idle connections to each target and report the server's CPU use meanwhile.
    Idle(IdleArgs),
}

/// Options shared by every mode.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Target `[label=][resp://|memcache://]host:port[?route=owner|cluster]` (repeat for
    /// several). `?route=owner`: each connection uses only its tesserad core's keys.
    /// `?route=cluster`: host:port is a seed; the slot map comes from its `CLUSTER SLOTS`,
    /// connections are spread over every master and each sends only its master's keys
    /// (`-MOVED`/`-ASK` count as errors, and apart as `redirects` in the JSON summary).
    #[arg(short = 't', long = "target", required = true)]
    pub targets: Vec<String>,
    /// Total connections.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub connections: usize,
    /// Requests in flight per connection.
    #[arg(short = 'P', long, default_value_t = 1)]
    pub pipeline: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Do not pin workers to cores.
    #[arg(long, conflicts_with = "pin_cores")]
    pub no_pin: bool,
    /// Pin workers to these cores (comma-separated), e.g. `1` to leave core 0 to the server.
    #[arg(long, value_delimiter = ',')]
    pub pin_cores: Vec<usize>,
    /// Open loop at this total rate (requests/s); closed loop when absent.
    #[arg(short = 'r', long)]
    pub rate: Option<f64>,
    /// Open-loop inter-arrival process.
    #[arg(long, value_enum, default_value_t = Arrival::Uniform)]
    pub arrival: Arrival,
    /// Measured duration, e.g. `10s`, `500ms`, `2m`.
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Warm-up before measurement (excluded from results).
    #[arg(short = 'w', long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Stop after this many measured requests (the duration still bounds the run).
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Command mix, e.g. `get=9,set=1` (commands: get set incr del dm.put dm.get scan rmw).
    #[arg(long, default_value = "get=9,set=1", conflicts_with = "ycsb")]
    pub mix: String,
    /// A YCSB core workload preset (sets mix and key distribution).
    #[arg(long, value_enum)]
    pub ycsb: Option<Ycsb>,
    /// Key space size.
    #[arg(short = 'k', long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Key distribution: `uniform`, `zipf[:S]`, `sequential`, `latest[:S]` (default uniform;
    /// with `--ycsb`, overrides the preset's).
    #[arg(long)]
    pub key_dist: Option<String>,
    /// Key prefix.
    #[arg(long, default_value = "key:")]
    pub key_prefix: String,
    /// Value size in bytes, fixed (`32`) or a range (`16-128`).
    #[arg(short = 'v', long, default_value = "32")]
    pub value_size: String,
    /// TTL on writes, milliseconds.
    #[arg(long)]
    pub ttl_ms: Option<u64>,
    /// DMap name for DM.PUT / DM.GET.
    #[arg(long, default_value = "bench")]
    pub dmap: String,
    /// Longest scan (YCSB E), keys.
    #[arg(long, default_value_t = 100)]
    pub scan_len: u32,
    /// Preload keys `0..N` with SET before measuring.
    #[arg(long, default_value_t = 0)]
    pub preload: u64,
    /// Interval of the interval log and time-series plot.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Open loop: sleep until this many us before each send, then busy-poll (yielding).
    #[arg(long, default_value_t = 50)]
    pub spin_us: u64,
    /// After the deadline, keep reading replies to requests already sent for up to this long.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Connect timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// `run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Load options.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Write the JSON result here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the HdrHistogram interval log here.
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,
    /// Write `latency-percentiles.svg` and `timeline.svg` into this directory.
    #[arg(long)]
    pub plot_dir: Option<PathBuf>,
}

/// `compare` options.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Load options (each target gets the whole load in its turn).
    #[command(flatten)]
    pub load: LoadArgs,
    /// Rounds per target.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Server pid of each target, in target order (`0` = unknown), for CPU/op and RSS. A
    /// target served by several processes (a cluster's nodes) gives them joined by `+`
    /// (`--server-pid 101,201+202+203`): its CPU/op and RSS are their sums.
    #[arg(long, value_delimiter = ',', value_parser = parse_pid_set)]
    pub server_pid: Vec<Vec<u32>>,
    /// After the preload, measure each target's server CPU with no load for this long
    /// (targets with a `--server-pid`): reported beside the CPU/op, with the CPU/op net of it.
    #[arg(long, value_parser = parse_duration)]
    pub idle: Option<Duration>,
    /// Write the JSON result here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write `latency-percentiles.svg` and `timeline.svg` into this directory.
    #[arg(long)]
    pub plot_dir: Option<PathBuf>,
    /// Write each round's HdrHistogram interval log (`<label>.round<N>.hlog`) into this
    /// directory.
    #[arg(long)]
    pub hdr_log_dir: Option<PathBuf>,
}

/// `memory` options.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Load options (keys are `{key-prefix}N`, values of `--value-size`'s minimum).
    #[command(flatten)]
    pub load: LoadArgs,
    /// Server pid of each target, in target order (required).
    #[arg(long, value_delimiter = ',', required = true)]
    pub server_pid: Vec<u32>,
    /// Write the JSON result here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `idle` options.
#[derive(Debug, Args)]
pub struct IdleArgs {
    /// Target `[label=][resp://|memcache://]host:port` (repeat for several).
    #[arg(short = 't', long = "target", required = true)]
    pub targets: Vec<String>,
    /// Server pid of each target, in target order (required).
    #[arg(long, value_delimiter = ',', required = true)]
    pub server_pid: Vec<u32>,
    /// Idle connections to hold.
    #[arg(short = 'c', long, default_value_t = 100)]
    pub connections: usize,
    /// How long to measure.
    #[arg(short = 'd', long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Write the JSON result here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Parses `10s`, `250ms`, `2m`, `1.5s`, `100us` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

impl LoadArgs {
    /// The run configuration these options describe (validated).
    pub fn to_config(&self) -> Result<RunConfig, BenchError> {
        let targets = self
            .targets
            .iter()
            .map(|t| t.parse::<Target>())
            .collect::<Result<Vec<_>, _>>()?;
        let mut workload = match self.ycsb {
            Some(p) => Workload::ycsb(p, self.keys),
            None => Workload {
                mix: parse_mix(&self.mix)?,
                keys: self.keys,
                ..Workload::default()
            },
        };
        if let Some(d) = &self.key_dist {
            workload.key_dist = d.parse::<KeyDist>()?;
        }
        workload.key_prefix.clone_from(&self.key_prefix);
        workload.value_size = self.value_size.parse::<ValueSize>()?;
        workload.ttl_ms = self.ttl_ms;
        workload.dmap.clone_from(&self.dmap);
        workload.scan_len_max = self.scan_len;
        let pinning = if self.no_pin {
            Pinning::None
        } else if self.pin_cores.is_empty() {
            Pinning::Auto
        } else {
            Pinning::Cores(self.pin_cores.clone())
        };
        let cfg = RunConfig {
            targets,
            workload,
            connections: self.connections,
            pipeline: self.pipeline,
            load: match self.rate {
                Some(rate) => LoadModel::Open {
                    rate,
                    arrival: self.arrival,
                },
                None => LoadModel::Closed,
            },
            workers: self.workers.unwrap_or_else(|| {
                if let Pinning::Cores(c) = &pinning {
                    c.len()
                } else {
                    std::thread::available_parallelism().map_or(1, usize::from)
                }
            }),
            pinning,
            warmup: self.warmup,
            duration: self.duration,
            requests: self.requests,
            interval: self.interval,
            seed: self.seed,
            connect_timeout: self.connect_timeout,
            spin: Duration::from_micros(self.spin_us),
            drain: self.drain,
            progress: !self.no_progress,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// `101` or `201+202+203` (`0` = unknown: an empty set).
fn parse_pid_set(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split('+') {
        let pid: u32 = part
            .trim()
            .parse()
            .map_err(|_| format!("not a pid or pid+pid+...: {s:?}"))?;
        if pid != 0 {
            out.push(pid);
        }
    }
    Ok(out)
}

fn pids(p: &[u32]) -> Vec<Option<u32>> {
    p.iter().map(|&p| (p != 0).then_some(p)).collect()
}

fn create(path: &PathBuf) -> Result<BufWriter<File>, BenchError> {
    make_parent(path)?;
    File::create(path)
        .map(BufWriter::new)
        .map_err(|e| BenchError::Output(format!("{}: {e}", path.display())))
}

fn make_parent(path: &std::path::Path) -> Result<(), BenchError> {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => std::fs::create_dir_all(d)
            .map_err(|e| BenchError::Output(format!("{}: {e}", d.display()))),
        _ => Ok(()),
    }
}

/// The JSON document of a compare.
#[derive(Debug, Serialize)]
struct CompareReport<'a> {
    tool: &'static str,
    machine: Machine,
    config: &'a RunConfig,
    rounds_per_target: usize,
    targets: &'a [TargetSummary],
    rounds: &'a [Round],
}

/// The JSON document of an idle measurement.
#[derive(Debug, Serialize)]
struct IdleReport<'a> {
    tool: &'static str,
    machine: Machine,
    results: &'a [IdleResult],
}

/// The JSON document of a memory measurement.
#[derive(Debug, Serialize)]
struct MemoryReport<'a> {
    tool: &'static str,
    machine: Machine,
    results: &'a [MemoryResult],
}

/// Runs the command line `args` (including the program name), writing reports to `out`.
/// A closed `out` (e.g. `| head`) ends the output quietly; it is not an error.
pub fn main_with_args<I, T>(args: I, out: &mut dyn Write) -> Result<(), BenchError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            return ignore_broken_pipe(write!(out, "{e}"));
        }
        Err(e) => return Err(BenchError::Config(e.to_string())),
    };
    match cli.command {
        Command::Run(a) => run_cmd(&a, out),
        Command::Compare(a) => compare_cmd(&a, out),
        Command::Memory(a) => memory_cmd(&a, out),
        Command::Idle(a) => idle_cmd(&a, out),
    }
}

fn ignore_broken_pipe(r: std::io::Result<()>) -> Result<(), BenchError> {
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(BenchError::Output(format!("stdout: {e}")))
        }
        _ => Ok(()),
    }
}

fn run_cmd(a: &RunArgs, out_w: &mut dyn Write) -> Result<(), BenchError> {
    let cfg = a.load.to_config()?;
    runner::preload(&cfg, a.load.preload)?;
    let out = match &a.hdr_log {
        Some(p) => {
            let mut w = create(p)?;
            runner::run(&cfg, Some(&mut w))?
        }
        None => runner::run(&cfg, None)?,
    };
    let rows = summarize(&out.stats, out.measured_s);
    ignore_broken_pipe(write!(
        out_w,
        "{:?}, {} connections x pipeline {}, {} workers, {:.2} s measured\n{}\
         unanswered at the end: {}; intended but not sent (open loop): {}; generator CPU: {:.2} s over {:.2} s wall = {:.2} cores\n",
        cfg.load,
        cfg.connections,
        cfg.pipeline,
        out.workers,
        out.measured_s,
        format_table(&rows),
        out.unfinished,
        out.unsent,
        out.generator_cpu_s,
        out.wall_s,
        out.generator_cores()
    ))?;
    if let Some(p) = &a.json {
        make_parent(p)?;
        write_json(p, &RunReport::new(&cfg, &out))?;
    }
    if let Some(dir) = &a.plot_dir {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::Output(e.to_string()))?;
        let series: Vec<(String, &hdrhistogram::Histogram<u64>)> = out
            .stats
            .kinds()
            .map(|(k, s)| (k.name().to_string(), &s.latency))
            .collect();
        plot::percentile_spectrum(
            &dir.join("latency-percentiles.svg"),
            "latency by percentile",
            &series,
        )?;
        plot::timeline(
            &dir.join("timeline.svg"),
            "throughput and p99 over time",
            &[("all commands".to_string(), &out.intervals)],
        )?;
    }
    Ok(())
}

fn compare_cmd(a: &CompareArgs, out_w: &mut dyn Write) -> Result<(), BenchError> {
    let cfg = a.load.to_config()?;
    if let Some(d) = &a.hdr_log_dir {
        std::fs::create_dir_all(d)
            .map_err(|e| BenchError::Output(format!("{}: {e}", d.display())))?;
    }
    let out: CompareOutcome = compare::compare(
        &cfg,
        a.rounds,
        &a.server_pid,
        a.load.preload,
        a.idle,
        a.hdr_log_dir.as_deref(),
    )?;
    ignore_broken_pipe(write!(
        out_w,
        "{:?}, {} connections x pipeline {}, {} rounds per target, medians (min-max)\n{}",
        cfg.load,
        cfg.connections,
        cfg.pipeline,
        a.rounds,
        compare::format_compare(&out)
    ))?;
    if let Some(p) = &a.json {
        make_parent(p)?;
        write_json(
            p,
            &CompareReport {
                tool: "tessera-bench",
                machine: Machine::detect(),
                config: &cfg,
                rounds_per_target: a.rounds,
                targets: &out.targets,
                rounds: &out.rounds,
            },
        )?;
    }
    if let Some(dir) = &a.plot_dir {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::Output(e.to_string()))?;
        let labels: Vec<String> = out.targets.iter().map(|t| t.label.clone()).collect();
        let spectra: Vec<(String, &hdrhistogram::Histogram<u64>)> =
            labels.iter().cloned().zip(out.histograms.iter()).collect();
        plot::percentile_spectrum(
            &dir.join("latency-percentiles.svg"),
            "latency by percentile (all rounds)",
            &spectra,
        )?;
        let lines: Vec<(String, &[runner::IntervalPoint])> = labels
            .into_iter()
            .zip(out.last_intervals.iter().map(Vec::as_slice))
            .collect();
        plot::timeline(
            &dir.join("timeline.svg"),
            "throughput and p99 over time (last round)",
            &lines,
        )?;
    }
    Ok(())
}

fn memory_cmd(a: &MemoryArgs, out_w: &mut dyn Write) -> Result<(), BenchError> {
    let cfg = a.load.to_config()?;
    let rs = compare::memory(&cfg, &pids(&a.server_pid), a.load.keys)?;
    ignore_broken_pipe(write!(out_w, "{}", compare::format_memory(&rs)))?;
    if let Some(p) = &a.json {
        make_parent(p)?;
        write_json(
            p,
            &MemoryReport {
                tool: "tessera-bench",
                machine: Machine::detect(),
                results: &rs,
            },
        )?;
    }
    Ok(())
}

fn idle_cmd(a: &IdleArgs, out_w: &mut dyn Write) -> Result<(), BenchError> {
    let targets = a
        .targets
        .iter()
        .map(|t| t.parse::<Target>())
        .collect::<Result<Vec<_>, _>>()?;
    let cfg = RunConfig {
        targets,
        ..RunConfig::default()
    };
    let rs = compare::idle(&cfg, &pids(&a.server_pid), a.connections, a.duration)?;
    ignore_broken_pipe(write!(out_w, "{}", compare::format_idle(&rs)))?;
    if let Some(p) = &a.json {
        make_parent(p)?;
        write_json(
            p,
            &IdleReport {
                tool: "tessera-bench",
                machine: Machine::detect(),
                results: &rs,
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Protocol;

    #[test]
    fn server_pid_sets() {
        let a = Cli::try_parse_from([
            "tessera-bench",
            "compare",
            "-t",
            "a=127.0.0.1:1",
            "-t",
            "b=127.0.0.1:2",
            "-t",
            "c=127.0.0.1:3",
            "--server-pid",
            "101,201+202+203,0",
        ])
        .unwrap();
        let Command::Compare(c) = a.command else {
            panic!("not compare")
        };
        assert_eq!(c.server_pid, vec![vec![101], vec![201, 202, 203], vec![]]);
        for bad in ["x", "1+", "1+-2", "+"] {
            assert!(parse_pid_set(bad).is_err(), "{bad}");
        }
    }

    fn parse(args: &[&str]) -> Result<RunConfig, BenchError> {
        let mut v = vec!["tessera-bench", "run"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).map_err(|e| BenchError::Config(e.to_string()))? {
            Cli {
                command: Command::Run(a),
            } => a.load.to_config(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_a_full_command_line() {
        let cfg = parse(&[
            "-t",
            "redis=127.0.0.1:6379",
            "-t",
            "memcache://127.0.0.1:11211",
            "-c",
            "8",
            "-P",
            "16",
            "--rate",
            "5000",
            "--arrival",
            "poisson",
            "-d",
            "250ms",
            "--mix",
            "get=8,set=1,del=1",
            "--key-dist",
            "zipf:1.1",
            "-v",
            "16-64",
            "--ttl-ms",
            "5000",
            "--pin-cores",
            "1",
        ])
        .unwrap();
        assert_eq!(cfg.targets.len(), 2);
        assert_eq!(cfg.targets[1].protocol, Protocol::Memcache);
        assert_eq!((cfg.connections, cfg.pipeline, cfg.workers), (8, 16, 1));
        assert_eq!(
            cfg.load,
            LoadModel::Open {
                rate: 5000.0,
                arrival: Arrival::Poisson
            }
        );
        assert_eq!(cfg.duration, Duration::from_millis(250));
        assert_eq!(cfg.workload.key_dist, KeyDist::Zipf(1.1));
        assert_eq!(cfg.workload.value_size, ValueSize { min: 16, max: 64 });
        assert_eq!(cfg.pinning, Pinning::Cores(vec![1]));
    }

    #[test]
    fn rejects_bad_options() {
        assert!(parse(&[]).is_err(), "a target is required");
        assert!(parse(&["-t", "127.0.0.1:1", "-P", "0"]).is_err());
        assert!(parse(&["-t", "127.0.0.1:1", "--rate", "-5"]).is_err());
        assert!(parse(&["-t", "127.0.0.1:1", "--mix", "get=0"]).is_err());
        assert!(parse(&["-t", "memcache://127.0.0.1:1", "--mix", "dm.get=1"]).is_err());
        assert!(parse(&["-t", "127.0.0.1:1", "-d", "3 parsecs"]).is_err());
        assert!(parse(&["-t", "127.0.0.1:1", "--ycsb", "f", "--mix", "get=1"]).is_err());
        let y = parse(&["-t", "127.0.0.1:1", "--ycsb", "c"]).unwrap();
        assert_eq!(y.workload.key_dist, KeyDist::Zipf(0.99));
        let y = parse(&["-t", "127.0.0.1:1", "--ycsb", "c", "--key-dist", "uniform"]).unwrap();
        assert_eq!(y.workload.key_dist, KeyDist::Uniform);
        assert!(parse(&["-t", "127.0.0.1:1", "--interval", "1us"]).is_err());
        assert!(parse(&["-t", "127.0.0.1:1", "-d", "1000000h"]).is_err());
        assert!(parse(&["-t", "127.0.0.1:1", "--keys", "0"]).is_err());
        assert!(parse(&["-t", "127.0.0.1:1", "--keys", "18446744073709551615"]).is_err());
        assert!(parse(&["-t", "127.0.0.1:1", "--workers", "5000"]).is_err());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }
}
