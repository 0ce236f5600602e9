//! Latency recording and summaries: per-command HdrHistograms, the summary row of each
//! command type, and the HdrHistogram interval log (the text format of Java's
//! `HistogramLogWriter`, read by HistogramLogAnalyzer, hdr-plot and HdrHistogram's own tools).

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::codec::Outcome;
use crate::workload::OpKind;
use crate::BenchError;

/// Largest latency a histogram holds, ns (100 s); longer samples are clamped to it.
pub const LATENCY_NS_MAX: u64 = 100_000_000_000;
/// Significant decimal digits kept by every histogram (0.1% relative error).
pub const SIGFIG: u8 = 3;

/// An empty latency histogram in nanoseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, SIGFIG).expect("constant bounds are valid")
}

/// Counters and histograms of one command type.
#[derive(Debug, Clone)]
pub struct KindStats {
    /// Latency from the intended send time (open loop) or the actual send time (closed loop).
    pub latency: Histogram<u64>,
    /// Latency from the actual send time ("service time"); equals `latency` in closed loop.
    pub service: Histogram<u64>,
    /// Replies that succeeded.
    pub ok: u64,
    /// Reads that found nothing.
    pub miss: u64,
    /// Error replies.
    pub errors: u64,
    /// Of `errors`, cluster redirects (`-MOVED`, `-ASK`).
    pub redirects: u64,
}

impl KindStats {
    fn new() -> Self {
        KindStats {
            latency: new_histogram(),
            service: new_histogram(),
            ok: 0,
            miss: 0,
            errors: 0,
            redirects: 0,
        }
    }

    /// Requests completed.
    pub fn count(&self) -> u64 {
        self.ok + self.miss + self.errors
    }
}

/// Per-command statistics of a worker or of a whole run (kinds created on first use).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    kinds: [Option<Box<KindStats>>; OpKind::ALL.len()],
}

impl Stats {
    /// Records one completed request.
    pub fn record(&mut self, kind: OpKind, outcome: Outcome, latency_ns: u64, service_ns: u64) {
        let k = self.kinds[kind.index()].get_or_insert_with(|| Box::new(KindStats::new()));
        k.latency.saturating_record(latency_ns.max(1));
        k.service.saturating_record(service_ns.max(1));
        match outcome {
            Outcome::Ok => k.ok += 1,
            Outcome::Miss => k.miss += 1,
            Outcome::Error => k.errors += 1,
            Outcome::Redirect => {
                k.errors += 1;
                k.redirects += 1;
            }
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        for (mine, theirs) in self.kinds.iter_mut().zip(&other.kinds) {
            if let Some(t) = theirs {
                let m = mine.get_or_insert_with(|| Box::new(KindStats::new()));
                m.latency.add(&t.latency).expect("same bounds");
                m.service.add(&t.service).expect("same bounds");
                m.ok += t.ok;
                m.miss += t.miss;
                m.errors += t.errors;
                m.redirects += t.redirects;
            }
        }
    }

    /// The command types seen, in report order.
    pub fn kinds(&self) -> impl Iterator<Item = (OpKind, &KindStats)> {
        OpKind::ALL
            .iter()
            .zip(&self.kinds)
            .filter_map(|(k, s)| s.as_deref().map(|s| (*k, s)))
    }

    /// Statistics of one kind, if any request of it completed.
    pub fn get(&self, kind: OpKind) -> Option<&KindStats> {
        self.kinds[kind.index()].as_deref()
    }

    /// All kinds merged into one ("ALL" row).
    pub fn total(&self) -> Option<KindStats> {
        let mut t: Option<KindStats> = None;
        for (_, s) in self.kinds() {
            match &mut t {
                None => t = Some(s.clone()),
                Some(t) => {
                    t.latency.add(&s.latency).expect("same bounds");
                    t.service.add(&s.service).expect("same bounds");
                    t.ok += s.ok;
                    t.miss += s.miss;
                    t.errors += s.errors;
                    t.redirects += s.redirects;
                }
            }
        }
        t
    }

    /// Requests completed over all kinds.
    pub fn count(&self) -> u64 {
        self.kinds().map(|(_, s)| s.count()).sum()
    }
}

/// Latency percentiles of a histogram, microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// 99.99th percentile.
    pub p9999_us: f64,
    /// Largest sample.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Percentiles {
    /// Percentiles of `h` (ns) in microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        Percentiles {
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            p9999_us: q(0.9999),
            max_us: h.max() as f64 / 1000.0,
            mean_us: h.mean() / 1000.0,
        }
    }
}

/// One row of the summary table.
#[derive(Debug, Clone, Serialize)]
pub struct KindSummary {
    /// Command type name (`GET`, ..., or `ALL`).
    pub command: String,
    /// Requests completed in the measured period.
    pub count: u64,
    /// Successful replies.
    pub ok: u64,
    /// Misses.
    pub miss: u64,
    /// Error replies.
    pub errors: u64,
    /// Of `errors`, cluster redirects (`-MOVED`, `-ASK`).
    pub redirects: u64,
    /// Completed requests per second of measured time.
    pub throughput: f64,
    /// Latency (from intended send time in open loop).
    pub latency: Percentiles,
    /// Service time (from actual send time).
    pub service: Percentiles,
}

impl KindSummary {
    /// The summary of `s` over `secs` seconds of measurement.
    pub fn new(command: &str, s: &KindStats, secs: f64) -> Self {
        KindSummary {
            command: command.to_string(),
            count: s.count(),
            ok: s.ok,
            miss: s.miss,
            errors: s.errors,
            redirects: s.redirects,
            throughput: if secs > 0.0 {
                s.count() as f64 / secs
            } else {
                0.0
            },
            latency: Percentiles::of(&s.latency),
            service: Percentiles::of(&s.service),
        }
    }
}

/// The summary rows of `stats`: one per command type, then `ALL` when there are several.
pub fn summarize(stats: &Stats, secs: f64) -> Vec<KindSummary> {
    let mut rows: Vec<KindSummary> = stats
        .kinds()
        .map(|(k, s)| KindSummary::new(k.name(), s, secs))
        .collect();
    if rows.len() > 1 {
        if let Some(t) = stats.total() {
            rows.push(KindSummary::new("ALL", &t, secs));
        }
    }
    rows
}

/// Formats the summary table (fixed-width text).
pub fn format_table(rows: &[KindSummary]) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "{:<8} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}\n",
        "command",
        "count",
        "ops/s",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "p99.99 us",
        "max us",
        "miss",
        "errors"
    );
    for r in rows {
        let l = &r.latency;
        let _ = writeln!(
            s,
            "{:<8} {:>10} {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8} {:>8}",
            r.command,
            r.count,
            r.throughput,
            l.p50_us,
            l.p90_us,
            l.p99_us,
            l.p999_us,
            l.p9999_us,
            l.max_us,
            r.miss,
            r.errors
        );
    }
    s
}

/// Writes an HdrHistogram interval log: a header once, then one line per interval and tag.
///
/// Timestamps are seconds since `BaseTime` (the start of measurement), values are
/// nanoseconds, and the `Interval_Max` column is in milliseconds (`MaxValueDivisor` 1e6), as
/// Java tools expect for latency logs.
pub struct IntervalLog<W: Write> {
    out: W,
    serializer: V2DeflateSerializer,
}

impl<W: Write> std::fmt::Debug for IntervalLog<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntervalLog").finish_non_exhaustive()
    }
}

const MAX_VALUE_DIVISOR: f64 = 1e6;

impl<W: Write> IntervalLog<W> {
    /// Starts a log whose interval timestamps are relative to `base`.
    pub fn new(mut out: W, base: SystemTime, comment: &str) -> io::Result<Self> {
        let mut serializer = V2DeflateSerializer::new();
        IntervalLogWriterBuilder::new()
            .add_comment(comment)
            .add_comment("values in ns; Interval_Max in ms; one tag per command type")
            .with_start_time(base)
            .with_base_time(base)
            .with_max_value_divisor(MAX_VALUE_DIVISOR)
            .begin_log_with(&mut out, &mut serializer)?;
        writeln!(
            out,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )?;
        Ok(IntervalLog { out, serializer })
    }

    /// Appends one interval histogram tagged with `tag` (no commas or spaces).
    pub fn write(
        &mut self,
        h: &Histogram<u64>,
        start: Duration,
        length: Duration,
        tag: &str,
    ) -> Result<(), BenchError> {
        // A builder with no headers writes nothing but the interval line.
        let mut w = IntervalLogWriterBuilder::new()
            .with_max_value_divisor(MAX_VALUE_DIVISOR)
            .begin_log_with(&mut self.out, &mut self.serializer)?;
        w.write_histogram(h, start, length, Tag::new(tag))
            .map_err(|e| BenchError::Output(format!("interval log: {e}")))
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One interval read back from a log.
#[derive(Debug, Clone)]
pub struct LoggedInterval {
    /// Tag (command type), if any.
    pub tag: Option<String>,
    /// Start, relative to the log's base time.
    pub start: Duration,
    /// Length of the interval.
    pub length: Duration,
    /// The decoded histogram.
    pub histogram: Histogram<u64>,
}

/// Reads every interval histogram of an interval log.
pub fn read_interval_log(bytes: &[u8]) -> Result<Vec<LoggedInterval>, BenchError> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(bytes) {
        let entry = entry.map_err(|e| BenchError::Output(format!("interval log parse: {e:?}")))?;
        if let LogEntry::Interval(i) = entry {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(i.encoded_histogram())
                .map_err(|e| BenchError::Output(format!("interval log base64: {e}")))?;
            let histogram: Histogram<u64> = de
                .deserialize(&mut io::Cursor::new(raw))
                .map_err(|e| BenchError::Output(format!("interval log histogram: {e:?}")))?;
            out.push(LoggedInterval {
                tag: i.tag().map(|t| t.as_str().to_string()),
                start: i.start_timestamp(),
                length: i.duration(),
                histogram,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_log_round_trips() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut log = IntervalLog::new(Vec::new(), base, "test run").unwrap();
        let mut hs = Vec::new();
        for i in 0..3u64 {
            for tag in ["GET", "SET"] {
                let mut h = new_histogram();
                for v in 0..(100 + i * 10) {
                    h.record(1_000 + v * 997 + i).unwrap();
                }
                h.record(150_000_000).unwrap();
                log.write(&h, Duration::from_secs(i), Duration::from_secs(1), tag)
                    .unwrap();
                hs.push((tag, i, h));
            }
        }
        let bytes = log.finish().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("#[BaseTime: 1700000000.000 (seconds since epoch)]"));
        assert!(text.contains("Tag=GET,1.000,1.000,150."), "{text}");
        let back = read_interval_log(&bytes).unwrap();
        assert_eq!(back.len(), hs.len());
        for (got, (tag, i, h)) in back.iter().zip(&hs) {
            assert_eq!(got.tag.as_deref(), Some(*tag));
            assert_eq!(got.start, Duration::from_secs(*i));
            assert_eq!(got.length, Duration::from_secs(1));
            assert_eq!(got.histogram, *h);
        }
    }

    #[test]
    fn stats_merge_and_summarize() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        for v in 1..=1000u64 {
            a.record(OpKind::Get, Outcome::Ok, v * 1000, v * 500);
        }
        b.record(OpKind::Get, Outcome::Miss, 5_000_000, 1);
        b.record(OpKind::Set, Outcome::Error, 2_000, 2_000);
        b.record(OpKind::Set, Outcome::Redirect, 2_000, 2_000);
        a.merge(&b);
        let rows = summarize(&a, 2.0);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].command, "GET");
        assert_eq!((rows[0].count, rows[0].miss), (1001, 1));
        assert!((rows[0].throughput - 500.5).abs() < 1e-9);
        assert!((rows[0].latency.p50_us - 501.0).abs() < 3.0);
        assert!((rows[0].latency.max_us - 5000.0).abs() < 5.0);
        assert_eq!((rows[1].errors, rows[1].redirects), (2, 1));
        assert_eq!(rows[2].command, "ALL");
        assert_eq!(rows[2].count, 1003);
        assert_eq!((rows[2].errors, rows[2].redirects), (2, 1));
        let table = format_table(&rows);
        assert_eq!(table.lines().count(), 4);
    }
}
