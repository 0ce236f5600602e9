//! Result files: the JSON document of a run (configuration, machine, per-command summary,
//! intervals, generator CPU) and the machine description used in every report.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::runner::{IntervalPoint, RunConfig, RunOutcome};
use crate::stats::{summarize, KindSummary};
use crate::BenchError;

/// The machine a result was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Seconds since the Unix epoch when the report was made.
    pub unix_time_s: u64,
}

impl Machine {
    /// Describes this machine (fields left empty when /proc cannot tell).
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            unix_time_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// The JSON document of one run.
#[derive(Debug, Serialize)]
pub struct RunReport<'a> {
    /// Always `tessera-bench`.
    pub tool: &'static str,
    /// Version of the harness.
    pub version: &'static str,
    /// Where it ran.
    pub machine: Machine,
    /// What was run.
    pub config: &'a RunConfig,
    /// Measured seconds (after warm-up).
    pub measured_s: f64,
    /// Wall seconds including warm-up.
    pub wall_s: f64,
    /// Worker threads used.
    pub workers: usize,
    /// Measured requests still unanswered at the end of the drain period.
    pub unfinished: u64,
    /// Open loop: requests intended but never sent (the target rate was not reached).
    pub unsent: u64,
    /// Generator CPU (user + system) over the run, seconds.
    pub generator_cpu_s: f64,
    /// Generator CPU in cores (cpu seconds / wall seconds).
    pub generator_cores: f64,
    /// One row per command type, then `ALL`.
    pub summary: Vec<KindSummary>,
    /// Per-interval throughput and latency.
    pub intervals: &'a [IntervalPoint],
}

impl<'a> RunReport<'a> {
    /// The report of `out`, measured with `config`.
    pub fn new(config: &'a RunConfig, out: &'a RunOutcome) -> Self {
        RunReport {
            tool: "tessera-bench",
            version: env!("CARGO_PKG_VERSION"),
            machine: Machine::detect(),
            config,
            measured_s: out.measured_s,
            wall_s: out.wall_s,
            workers: out.workers,
            unfinished: out.unfinished,
            unsent: out.unsent,
            generator_cpu_s: out.generator_cpu_s,
            generator_cores: out.generator_cores(),
            summary: summarize(&out.stats, out.measured_s),
            intervals: &out.intervals,
        }
    }
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), BenchError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| BenchError::Output(format!("json: {e}")))?;
    std::fs::write(path, text + "\n")
        .map_err(|e| BenchError::Output(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Outcome;
    use crate::stats::Stats;
    use crate::workload::OpKind;

    #[test]
    fn report_serializes_with_summary_rows() {
        let mut stats = Stats::default();
        stats.record(OpKind::Get, Outcome::Ok, 10_000, 9_000);
        stats.record(OpKind::Set, Outcome::Ok, 20_000, 20_000);
        let out = RunOutcome {
            stats,
            measured_s: 1.0,
            intervals: Vec::new(),
            generator_cpu_s: 0.5,
            wall_s: 2.0,
            workers: 1,
            unfinished: 0,
            unsent: 0,
        };
        let cfg = RunConfig::default();
        let v = serde_json::to_value(RunReport::new(&cfg, &out)).unwrap();
        assert_eq!(v["summary"][2]["command"], "ALL");
        assert_eq!(v["summary"][0]["count"], 1);
        assert_eq!(v["generator_cores"], 0.25);
        assert_eq!(v["config"]["pipeline"], 1);
    }
}
