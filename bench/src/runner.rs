//! Sending load: worker threads (one per core, pinned), each driving its share of the
//! connections with non-blocking sockets on a mio event loop, in closed or open loop.
//!
//! Closed loop keeps `pipeline` requests in flight on every connection. Open loop sends each
//! request at its intended time from a [`Schedule`] (at most `pipeline` in flight per
//! connection: when a connection is full or the sender is late, requests wait, and their latency
//! still counts from the intended time). Samples whose intended time falls in the warm-up are
//! not recorded. Every run ends by a deadline and optionally by a request count.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream as StdTcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use crate::codec::{self, Encoder, Expect, Outcome, Protocol};
use crate::route::{ClusterMap, OwnerFilter, Route};
use crate::schedule::{Arrival, Schedule};
use crate::stats::{IntervalLog, Percentiles, Stats};
use crate::workload::{Generator, OpKind, Workload};
use crate::BenchError;

/// A server to drive: `[label=][resp://|memcache://]host:port[?route=owner]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Name in reports (defaults to the address).
    pub label: String,
    /// Address as given.
    pub addr: String,
    /// Wire protocol.
    pub protocol: Protocol,
    /// Which keys each connection uses (`?route=owner`: only its own core's, tesserad).
    pub route: Route,
}

impl FromStr for Target {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (label, rest) = match s.split_once('=') {
            Some((l, r)) if !l.contains(':') => (Some(l.to_string()), r),
            _ => (None, s),
        };
        let (rest, route) = match rest.split_once('?') {
            Some((a, q)) => match q.strip_prefix("route=") {
                Some(r) => (a, r.parse::<Route>()?),
                None => {
                    return Err(BenchError::Config(format!(
                        "target {s:?}: the only option is ?route=any|owner|cluster"
                    )))
                }
            },
            None => (rest, Route::Any),
        };
        let (protocol, addr) = match rest.split_once("://") {
            Some((scheme, a)) => (scheme.parse()?, a),
            None => (Protocol::Resp, rest),
        };
        if addr.is_empty() || !addr.contains(':') {
            return Err(BenchError::Config(format!(
                "target {s:?} is not [label=][resp://|memcache://]host:port[?route=owner]"
            )));
        }
        if route != Route::Any && protocol != Protocol::Resp {
            return Err(BenchError::Config(format!(
                "target {s:?}: route=owner and route=cluster need a RESP server"
            )));
        }
        Ok(Target {
            label: label.unwrap_or_else(|| addr.to_string()),
            addr: addr.to_string(),
            protocol,
            route,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum LoadModel {
    /// Keep `pipeline` requests in flight per connection, as fast as the server answers.
    Closed,
    /// `rate` requests per second in total, spread evenly over the connections.
    Open {
        /// Total target rate, requests/s.
        rate: f64,
        /// Inter-arrival process.
        arrival: Arrival,
    },
}

/// Which cores the workers are pinned to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Pinning {
    /// Not pinned: the OS schedules the workers.
    None,
    /// Worker `i` on the `i mod n`-th core the process may use.
    Auto,
    /// Worker `i` on core `cores[i mod len]`.
    Cores(Vec<usize>),
}

/// Everything a run needs. Limits are documented per field.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// Servers; connection `c` goes to `targets[c mod len]` (load spread over all of them).
    pub targets: Vec<Target>,
    /// What to send.
    pub workload: Workload,
    /// Total connections (>= 1, <= [`CONNECTIONS_MAX`]).
    pub connections: usize,
    /// Requests in flight per connection (>= 1, <= [`PIPELINE_MAX`]).
    pub pipeline: usize,
    /// Closed or open loop.
    pub load: LoadModel,
    /// Worker threads (1..=[`WORKERS_MAX`]; more than `connections` are not started).
    pub workers: usize,
    /// Core pinning of workers.
    pub pinning: Pinning,
    /// Warm-up before measurement; its samples are discarded.
    pub warmup: Duration,
    /// Measured time after warm-up (the run's deadline is `warmup + duration`; warm-up,
    /// duration and drain together at most [`RUN_TIME_MAX`]).
    pub duration: Duration,
    /// Stop after this many measured requests in total (split evenly over connections).
    pub requests: Option<u64>,
    /// Length of an interval in the interval log and the time-series plot (>= [`INTERVAL_MIN`]).
    pub interval: Duration,
    /// Seed of every random choice (per-connection seeds derive from it).
    pub seed: u64,
    /// Time allowed to establish each connection.
    pub connect_timeout: Duration,
    /// Open loop: the worker sleeps (timerfd) until this long before its next send, then
    /// busy-polls, yielding the CPU between polls, so wake-up latency does not delay sends.
    pub spin: Duration,
    /// After the deadline, how long to keep reading replies to requests already sent (their
    /// latencies count, so a slow tail is not cut off); still unanswered then: `unfinished`.
    pub drain: Duration,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// Most connections one run opens.
pub const CONNECTIONS_MAX: usize = 100_000;
/// Shortest interval of the interval log and time series.
pub const INTERVAL_MIN: Duration = Duration::from_millis(10);
/// Longest run (warm-up + duration + drain).
pub const RUN_TIME_MAX: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most worker threads one run starts.
pub const WORKERS_MAX: usize = 1024;
/// Deepest pipeline accepted.
pub const PIPELINE_MAX: usize = 100_000;
/// Longest interval between progress and interval-log checks when idle.
const IDLE_TICK: Duration = Duration::from_millis(10);
/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            targets: Vec::new(),
            workload: Workload::default(),
            connections: 50,
            pipeline: 1,
            load: LoadModel::Closed,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            pinning: Pinning::Auto,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            requests: None,
            interval: Duration::from_secs(1),
            seed: 1,
            connect_timeout: Duration::from_secs(5),
            spin: Duration::from_micros(50),
            drain: Duration::from_secs(1),
            progress: false,
        }
    }
}

impl RunConfig {
    /// Checks every limit before anything is started.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: &str| Err(BenchError::Config(m.to_string()));
        if self.targets.is_empty() {
            return bad("at least one target is needed");
        }
        if !(1..=CONNECTIONS_MAX).contains(&self.connections) {
            return bad("connections must be in 1..=100000");
        }
        if !(1..=PIPELINE_MAX).contains(&self.pipeline) {
            return bad("pipeline must be in 1..=100000");
        }
        if !(1..=WORKERS_MAX).contains(&self.workers) {
            return bad("workers must be in 1..=1024");
        }
        if self.interval < INTERVAL_MIN {
            return bad("interval must be >= 10ms");
        }
        if self.duration.is_zero() {
            return bad("duration must be > 0");
        }
        if self.warmup + self.duration + self.drain > RUN_TIME_MAX {
            return bad("warm-up + duration + drain must be <= 30 days");
        }
        if let LoadModel::Open { rate, .. } = self.load {
            if !(rate.is_finite() && rate > 0.0) {
                return bad("open-loop rate must be > 0");
            }
        }
        if let Pinning::Cores(c) = &self.pinning {
            if c.is_empty() {
                return bad("pinning core list is empty");
            }
        }
        self.workload.validate()?;
        for t in &self.targets {
            Encoder::new(t.protocol, &self.workload)?;
            if t.route != Route::Any {
                self.workload.check_owner_routable()?;
            }
        }
        Ok(())
    }
}

/// Throughput and latency of one interval of the run (all command types together).
#[derive(Debug, Clone, Serialize)]
pub struct IntervalPoint {
    /// Start, seconds after the end of warm-up.
    pub start_s: f64,
    /// Length, seconds.
    pub length_s: f64,
    /// Requests completed in the interval.
    pub count: u64,
    /// Requests per second.
    pub throughput: f64,
    /// Latency percentiles of the interval.
    pub latency: Percentiles,
}

/// What a run measured.
#[derive(Debug)]
pub struct RunOutcome {
    /// Per-command statistics of the measured period.
    pub stats: Stats,
    /// Measured seconds (from the end of warm-up to the last worker's stop).
    pub measured_s: f64,
    /// Per-interval throughput and latency.
    pub intervals: Vec<IntervalPoint>,
    /// CPU time (user + system) the generator process used during the run, seconds.
    pub generator_cpu_s: f64,
    /// Wall time of the run including warm-up, seconds.
    pub wall_s: f64,
    /// Workers actually started.
    pub workers: usize,
    /// Measured requests sent but not answered by the end of the drain period.
    pub unfinished: u64,
    /// Open loop: requests intended before the deadline but never sent because the
    /// connection was full (the target rate was not reached). For Poisson arrivals this is
    /// the expected number.
    pub unsent: u64,
}

/// A counter sampled at the start and at the end of a run's measured window (after the
/// warm-up, until the deadline or an earlier stop), such as a server's CPU seconds: `None` when
/// it cannot be read.
pub type Probe = Arc<dyn Fn() -> Option<f64> + Send + Sync>;

/// A [`Probe`]'s values at both ends of the measured window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeWindow {
    /// The value when the warm-up ended.
    pub start: f64,
    /// The value at the deadline (or when the run stopped, if earlier).
    pub end: f64,
    /// Seconds between the two samples.
    pub seconds: f64,
}

impl ProbeWindow {
    /// (end - start) per second of the window (0 for an empty window).
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            (self.end - self.start) / self.seconds
        } else {
            0.0
        }
    }
}

/// Samples `probe` when the warm-up ends (`warm_at`) and at `end_at`, or at once when `stop`
/// says the run is over (before the warm-up ended: no window).
fn sample_window(
    probe: &Probe,
    stop: &mpsc::Receiver<()>,
    warm_at: Instant,
    end_at: Instant,
) -> Option<ProbeWindow> {
    match stop.recv_timeout(warm_at.saturating_duration_since(Instant::now())) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return None,
    }
    let t0 = Instant::now();
    let start = probe()?;
    // A message or the sender's drop both mean "stopped": sample now.
    let _ = stop.recv_timeout(end_at.saturating_duration_since(Instant::now()));
    let end = probe()?;
    Some(ProbeWindow {
        start,
        end,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

impl RunOutcome {
    /// Generator CPU as a fraction of one core over the run.
    pub fn generator_cores(&self) -> f64 {
        if self.wall_s > 0.0 {
            self.generator_cpu_s / self.wall_s
        } else {
            0.0
        }
    }
}

/// `total` split into `parts` near-equal shares: the start and length of share `i`.
pub fn share(total: u64, i: u64, parts: u64) -> (u64, u64) {
    let base = total / parts;
    let extra = total % parts;
    let start = i * base + i.min(extra);
    (start, base + u64::from(i < extra))
}

/// Writes keys `0..n` (sequential, pipelined, not measured) so reads hit: with `SET`, and
/// with `DM.PUT` into the workload's DMap when the mix uses DMap commands.
pub fn preload(base: &RunConfig, n: u64) -> Result<(), BenchError> {
    if n == 0 {
        return Ok(());
    }
    if base.targets.iter().any(|t| t.route == Route::Cluster) {
        base.validate()?;
        let (clusters, others): (Vec<Target>, Vec<Target>) = base
            .targets
            .iter()
            .cloned()
            .partition(|t| t.route == Route::Cluster);
        let mut cfg = base.clone();
        cfg.targets = clusters;
        preload_cluster(&cfg, n)?;
        if others.is_empty() {
            return Ok(());
        }
        cfg.targets = others;
        return preload(&cfg, n);
    }
    let w = &base.workload;
    let dmap = w.uses(OpKind::DmGet) || w.uses(OpKind::DmPut);
    let plain = !dmap
        || [
            OpKind::Get,
            OpKind::Set,
            OpKind::Del,
            OpKind::Scan,
            OpKind::Rmw,
        ]
        .iter()
        .any(|&k| w.uses(k));
    if plain {
        preload_with(base, n, OpKind::Set)?;
    }
    if dmap {
        preload_with(base, n, OpKind::DmPut)?;
    }
    Ok(())
}

fn preload_with(base: &RunConfig, n: u64, kind: OpKind) -> Result<(), BenchError> {
    let mut cfg = base.clone();
    cfg.workload.mix = vec![(kind, 1)];
    cfg.workload.keys = n;
    cfg.workload.key_dist = crate::workload::KeyDist::Sequential;
    cfg.load = LoadModel::Closed;
    cfg.pipeline = cfg.pipeline.max(64);
    cfg.connections = cfg.connections.min(n as usize).max(1);
    cfg.warmup = Duration::ZERO;
    cfg.requests = Some(n);
    // Bounded even if the server is very slow: at least 1 hour or 1 ms per key.
    cfg.duration = Duration::from_secs(3600).max(Duration::from_millis(n));
    cfg.progress = false;
    // Preloading fills the whole key space, whichever core owns each key.
    for t in &mut cfg.targets {
        t.route = Route::Any;
    }
    let out = run(&cfg, None)?;
    let errors: u64 = out.stats.kinds().map(|(_, s)| s.errors).sum();
    if out.stats.count() < n || errors > 0 {
        return Err(BenchError::Protocol(format!(
            "preload stored {} of {n} keys ({errors} errors)",
            out.stats.count() - errors
        )));
    }
    Ok(())
}

/// Requests per pipelined batch of the cluster preload.
const PRELOAD_BATCH: u64 = 256;

/// Cluster preload: `SET` of keys `0..n`, each sent to the master that owns its slot (seed
/// addresses from the targets' `CLUSTER SLOTS`), pipelined in batches over one blocking
/// connection per master. Any error reply (including `-MOVED`) fails the preload.
fn preload_cluster(base: &RunConfig, n: u64) -> Result<(), BenchError> {
    for t in &base.targets {
        let map = crate::route::fetch_cluster_map(&t.addr, base.connect_timeout)?;
        let mut enc = Encoder::new(Protocol::Resp, &base.workload)?;
        for (i, addr) in map.masters.iter().enumerate() {
            let node = Target {
                label: addr.clone(),
                addr: addr.clone(),
                protocol: Protocol::Resp,
                route: Route::Any,
            };
            let mut s = connect_blocking(&node, base.connect_timeout)?;
            // Bounded: a silent server fails the preload instead of hanging it.
            s.set_read_timeout(Some(base.connect_timeout.max(Duration::from_secs(10))))?;
            let mut filter = OwnerFilter::cluster(&base.workload.key_prefix, &map, i as u32)?;
            let mut keys = (0..n).filter(|&k| filter.accepts(k)).peekable();
            let mut out = Vec::new();
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; READ_CHUNK];
            while keys.peek().is_some() {
                out.clear();
                let mut sent = 0u64;
                for key in keys.by_ref().take(PRELOAD_BATCH as usize) {
                    let op = crate::workload::Op {
                        kind: OpKind::Set,
                        key,
                        value_len: base.workload.value_size.max,
                        count: 1,
                    };
                    enc.encode(&op, &mut out);
                    sent += 1;
                }
                s.write_all(&out)?;
                let mut got = 0u64;
                let mut pos = 0;
                buf.clear();
                while got < sent {
                    match codec::parse_reply(
                        Protocol::Resp,
                        crate::memcache::McCommand::Get,
                        &buf[pos..],
                    )? {
                        Some((Outcome::Error | Outcome::Redirect, _)) => {
                            return Err(BenchError::Protocol(format!(
                                "preload: {addr} answered SET with an error (slot map changed?)"
                            )))
                        }
                        Some((_, used)) => {
                            pos += used;
                            got += 1;
                        }
                        None => {
                            let r = s.read(&mut chunk)?;
                            if r == 0 {
                                return Err(BenchError::Protocol(format!(
                                    "preload: {addr} closed the connection"
                                )));
                            }
                            buf.extend_from_slice(&chunk[..r]);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Replaces each `route=cluster` target by one target per master of its `CLUSTER SLOTS` map;
/// returns the expanded configuration and, per target, the map and master index to route by.
fn expand_cluster(cfg: &RunConfig) -> Result<(RunConfig, ClusterNodes), BenchError> {
    let mut out = cfg.clone();
    let mut nodes = Vec::new();
    out.targets.clear();
    for t in &cfg.targets {
        if t.route != Route::Cluster {
            out.targets.push(t.clone());
            nodes.push(None);
            continue;
        }
        let map = Arc::new(crate::route::fetch_cluster_map(
            &t.addr,
            cfg.connect_timeout,
        )?);
        if map.unassigned() > 0 {
            return Err(BenchError::Config(format!(
                "cluster at {}: {} slots have no master (cluster not ready?)",
                t.addr,
                map.unassigned()
            )));
        }
        if cfg.connections < map.masters.len() {
            return Err(BenchError::Config(format!(
                "route=cluster: {} connections cannot cover {} masters",
                cfg.connections,
                map.masters.len()
            )));
        }
        for (i, addr) in map.masters.iter().enumerate() {
            out.targets.push(Target {
                label: format!("{}/{addr}", t.label),
                addr: addr.clone(),
                protocol: Protocol::Resp,
                route: Route::Cluster,
            });
            nodes.push(Some((map.clone(), i as u32)));
        }
    }
    Ok((out, Arc::new(nodes)))
}

/// Per (expanded) target: the cluster map and master index its connections route by.
type ClusterNodes = Arc<Vec<Option<(Arc<ClusterMap>, u32)>>>;

/// Interval statistics sent by a worker when it leaves an interval.
struct IntervalMsg {
    index: u64,
    end_ns: u64,
    stats: Stats,
}

/// Runs `cfg` to completion; writes the HdrHistogram interval log to `log` if given.
pub fn run(cfg: &RunConfig, log: Option<&mut dyn Write>) -> Result<RunOutcome, BenchError> {
    run_probed(cfg, log, None).map(|(run, _)| run)
}

/// [`run`], sampling `probe` at both ends of the measured window (the window is `None` when
/// the run stopped before its warm-up ended or the probe could not be read).
pub fn run_probed(
    cfg: &RunConfig,
    log: Option<&mut dyn Write>,
    probe: Option<Probe>,
) -> Result<(RunOutcome, Option<ProbeWindow>), BenchError> {
    cfg.validate()?;
    let (expanded, nodes) = expand_cluster(cfg)?;
    let cfg = &expanded;
    let workers = cfg.workers.min(cfg.connections);
    let cores: Vec<Option<core_affinity::CoreId>> = match &cfg.pinning {
        Pinning::None => vec![None],
        Pinning::Auto => {
            let ids = core_affinity::get_core_ids().unwrap_or_default();
            if ids.is_empty() {
                vec![None]
            } else {
                ids.into_iter().map(Some).collect()
            }
        }
        Pinning::Cores(c) => c
            .iter()
            .map(|&id| Some(core_affinity::CoreId { id }))
            .collect(),
    };
    let gate = Arc::new(StartGate::default());
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<AtomicU64>> = (0..workers).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let (tx, rx) = mpsc::channel::<IntervalMsg>();

    let mut handles = Vec::new();
    for w in 0..workers {
        let conns: Vec<usize> = (w..cfg.connections).step_by(workers).collect();
        let ctx = WorkerCtx {
            cfg: cfg.clone(),
            conns,
            core: cores[w % cores.len()],
            gate: gate.clone(),
            stop: stop.clone(),
            completed: counters[w].clone(),
            tx: tx.clone(),
            nodes: nodes.clone(),
        };
        match std::thread::Builder::new()
            .name(format!("bench-worker-{w}"))
            .spawn(move || worker(&ctx))
        {
            Ok(h) => handles.push(h),
            Err(e) => {
                // Release the workers already started, then report the failure.
                gate.open(None);
                for h in handles {
                    let _ = h.join();
                }
                return Err(BenchError::Io(e));
            }
        }
    }
    drop(tx);
    // Every worker has connected (or failed); then the clock starts for all at once.
    gate.wait_ready(workers);
    let start = Instant::now();
    let wall_start = SystemTime::now();
    let cpu_before = crate::procfs::self_cpu_seconds().ok();
    gate.open(Some(start));
    // Dropping `probe_stop` (when the workers are done, or on an early return) ends the window.
    let (probe_stop, probe_rx) = mpsc::channel::<()>();
    let sampler = probe.and_then(|p| {
        let (warm_at, end_at) = (start + cfg.warmup, start + cfg.warmup + cfg.duration);
        std::thread::Builder::new()
            .name("bench-probe".into())
            .spawn(move || sample_window(&p, &probe_rx, warm_at, end_at))
            .ok()
    });

    let measure_base = wall_start + cfg.warmup;
    let mut log = match log {
        Some(w) => Some(IntervalLog::new(
            w,
            measure_base,
            &format!(
                "tessera-bench {:?} against {:?}",
                cfg.load,
                target_labels(cfg)
            ),
        )?),
        None => None,
    };
    let bar = progress_bar(cfg);
    let mut pending: BTreeMap<u64, (usize, u64, Stats)> = BTreeMap::new();
    let mut points = Vec::new();
    let mut last_count = 0u64;
    let mut last_tick = Instant::now();
    let interval_ns = cfg.interval.as_nanos() as u64;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => {
                let e = pending
                    .entry(m.index)
                    .or_insert_with(|| (0, 0, Stats::default()));
                e.0 += 1;
                e.1 = e.1.max(m.end_ns);
                e.2.merge(&m.stats);
                // Intervals every worker has reported are final: log them in order.
                while let Some((&i, e)) = pending.first_key_value() {
                    if e.0 < workers {
                        break;
                    }
                    let (_, (_, end, s)) = pending.pop_first().expect("checked non-empty");
                    points.push(finish_interval(i, end, &s, interval_ns, cfg, log.as_mut())?);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some(bar) = &bar {
            if last_tick.elapsed() >= Duration::from_millis(250) {
                let total: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
                let dt = last_tick.elapsed().as_secs_f64();
                bar.set_message(format!("{:>10.0} ops/s", (total - last_count) as f64 / dt));
                bar.set_position(start.elapsed().as_millis() as u64);
                last_count = total;
                last_tick = Instant::now();
            }
        }
    }
    let mut stats = Stats::default();
    let mut first_err = None;
    let mut end_ns = 0;
    let mut unfinished = 0;
    let mut unsent = 0;
    for h in handles {
        match h.join() {
            Ok(Ok(w)) => {
                stats.merge(&w.stats);
                end_ns = end_ns.max(w.stop_ns);
                unfinished += w.unfinished;
                unsent += w.unsent;
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(BenchError::Protocol("a worker panicked".into()));
            }
        }
    }
    drop(probe_stop);
    let window = sampler.and_then(|h| h.join().ok().flatten());
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    // Workers that stopped early never reported later intervals: those are final now.
    while let Some((i, (_, end, s))) = pending.pop_first() {
        points.push(finish_interval(i, end, &s, interval_ns, cfg, log.as_mut())?);
    }
    if let Some(l) = log {
        l.finish()?;
    }
    let wall_s = start.elapsed().as_secs_f64();
    let cpu_after = crate::procfs::self_cpu_seconds().ok();
    let warmup_ns = cfg.warmup.as_nanos() as u64;
    let outcome = RunOutcome {
        stats,
        measured_s: end_ns.saturating_sub(warmup_ns) as f64 / 1e9,
        intervals: points,
        generator_cpu_s: match (cpu_before, cpu_after) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        },
        wall_s,
        workers,
        unfinished,
        unsent,
    };
    Ok((outcome, window))
}

fn target_labels(cfg: &RunConfig) -> Vec<String> {
    cfg.targets.iter().map(|t| t.label.clone()).collect()
}

fn progress_bar(cfg: &RunConfig) -> Option<indicatif::ProgressBar> {
    if !cfg.progress {
        return None;
    }
    let total_ms = (cfg.warmup + cfg.duration).as_millis() as u64;
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total_ms),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {percent:>3}% {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}

fn finish_interval(
    index: u64,
    end_ns: u64,
    s: &Stats,
    interval_ns: u64,
    cfg: &RunConfig,
    log: Option<&mut IntervalLog<&mut dyn Write>>,
) -> Result<IntervalPoint, BenchError> {
    let warmup_ns = cfg.warmup.as_nanos() as u64;
    let start_ns = index * interval_ns;
    let len_ns = interval_ns
        .min(end_ns.saturating_sub(warmup_ns + start_ns))
        .max(1);
    let start = Duration::from_nanos(start_ns);
    let length = Duration::from_nanos(len_ns);
    if let Some(log) = log {
        for (k, ks) in s.kinds() {
            log.write(&ks.latency, start, length, k.name())?;
        }
    }
    let (count, latency) = match s.total() {
        Some(t) => (t.count(), Percentiles::of(&t.latency)),
        None => (0, Percentiles::of(&crate::stats::new_histogram())),
    };
    Ok(IntervalPoint {
        start_s: start.as_secs_f64(),
        length_s: length.as_secs_f64(),
        count,
        throughput: count as f64 / length.as_secs_f64(),
        latency,
    })
}

/// The start line of a run: workers arrive once connected, the coordinator waits for all of
/// them, then releases everyone with one start instant (or aborts the run).
#[derive(Default)]
struct StartGate {
    state: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Default)]
struct GateState {
    arrived: usize,
    signal: GateSignal,
}

#[derive(Default, Clone, Copy)]
enum GateSignal {
    #[default]
    Waiting,
    Go(Instant),
    Abort,
}

impl StartGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Called by a worker: returns the start instant, or `None` if the run was aborted.
    fn arrive_and_wait(&self) -> Option<Instant> {
        let mut st = self.lock();
        st.arrived += 1;
        self.cv.notify_all();
        loop {
            match st.signal {
                GateSignal::Go(t) => return Some(t),
                GateSignal::Abort => return None,
                GateSignal::Waiting => {
                    st = self
                        .cv
                        .wait(st)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            }
        }
    }

    fn wait_ready(&self, n: usize) {
        let mut st = self.lock();
        while st.arrived < n {
            st = self
                .cv
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn open(&self, start: Option<Instant>) {
        self.lock().signal = start.map_or(GateSignal::Abort, GateSignal::Go);
        self.cv.notify_all();
    }
}

struct WorkerCtx {
    cfg: RunConfig,
    conns: Vec<usize>,
    core: Option<core_affinity::CoreId>,
    gate: Arc<StartGate>,
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicU64>,
    tx: mpsc::Sender<IntervalMsg>,
    nodes: ClusterNodes,
}

/// Token of the open-loop send timer (connections use their index).
const TIMER_TOKEN: Token = Token(usize::MAX);

/// A timerfd in the worker's poll set, so an open-loop worker can sleep until just before its
/// next send with nanosecond resolution instead of busy-polling.
struct SendTimer {
    fd: std::os::fd::OwnedFd,
}

impl SendTimer {
    fn new(poll: &Poll) -> Result<Self, BenchError> {
        use rustix::time::{timerfd_create, TimerfdClockId, TimerfdFlags};
        use std::os::fd::AsRawFd;
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )
        .map_err(io::Error::from)?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&fd.as_raw_fd()),
            TIMER_TOKEN,
            Interest::READABLE,
        )?;
        Ok(SendTimer { fd })
    }

    /// Fires once, `after_ns` from now (re-arming replaces the previous expiry).
    fn arm(&mut self, after_ns: u64) -> Result<(), BenchError> {
        use rustix::time::{timerfd_settime, Itimerspec, TimerfdTimerFlags, Timespec};
        // Edge-triggered: consume a pending expiry so the next one is a new edge.
        self.clear();
        let after_ns = after_ns.max(1);
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: (after_ns / 1_000_000_000) as i64,
                tv_nsec: (after_ns % 1_000_000_000) as _,
            },
        };
        timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec).map_err(io::Error::from)?;
        Ok(())
    }

    /// Reads the expiry count (if any) so the fd is no longer readable.
    fn clear(&mut self) {
        let mut buf = [0u8; 8];
        // EAGAIN when nothing expired: nothing to clear.
        let _ = rustix::io::read(&self.fd, &mut buf);
    }
}

/// What a worker measured.
struct WorkerResult {
    stats: Stats,
    /// When it stopped sending, ns since the start (at most the deadline).
    stop_ns: u64,
    unfinished: u64,
    unsent: u64,
}

/// A request awaiting its replies.
#[derive(Debug, Clone, Copy)]
struct Pending {
    kind: OpKind,
    expect: Expect,
    part: u8,
    outcome: Outcome,
    intended_ns: u64,
    sent_ns: u64,
    measured: bool,
}

struct Conn {
    stream: TcpStream,
    protocol: Protocol,
    gen: Generator,
    sched: Option<Schedule>,
    /// Measured requests this connection may still send (`u64::MAX`: unlimited).
    budget: u64,
    inflight: VecDeque<Pending>,
    wbuf: Vec<u8>,
    wpos: usize,
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
}

/// Connects to `t`; with `route=owner`, also asks the server which core serves the connection
/// and returns that core and the number of executors.
fn connect(t: &Target, timeout: Duration) -> Result<(TcpStream, Option<(u32, u32)>), BenchError> {
    let mut s = connect_blocking(t, timeout)?;
    let err = |source| BenchError::Connect {
        addr: t.addr.clone(),
        source,
    };
    s.set_nodelay(true).map_err(err)?;
    let core = match t.route {
        Route::Owner => Some(crate::route::learn_core(&mut s, timeout)?),
        Route::Any | Route::Cluster => None,
    };
    s.set_nonblocking(true).map_err(err)?;
    Ok((TcpStream::from_std(s), core))
}

/// Connects to `t` with a blocking socket (for modes that only hold connections).
pub fn connect_blocking(t: &Target, timeout: Duration) -> Result<StdTcpStream, BenchError> {
    let err = |source| BenchError::Connect {
        addr: t.addr.clone(),
        source,
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in t.addr.to_socket_addrs().map_err(err)? {
        match StdTcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(err(last))
}

/// Connects every connection of the worker (its part of the run's setup).
fn setup(ctx: &WorkerCtx, poll: &Poll) -> Result<Vec<Conn>, BenchError> {
    let cfg = &ctx.cfg;
    let total = cfg.connections as u64;
    let mut conns = Vec::with_capacity(ctx.conns.len());
    for (slot, &c) in ctx.conns.iter().enumerate() {
        let target = &cfg.targets[c % cfg.targets.len()];
        let (mut stream, core) = connect(target, cfg.connect_timeout)?;
        poll.registry().register(
            &mut stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let c64 = c as u64;
        let seed = cfg.seed ^ c64.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let (range_start, range_len) = share(cfg.workload.keys, c64, total);
        let mut gen = Generator::new(
            &cfg.workload,
            seed,
            (range_start, range_start + range_len),
            c64,
            total,
        );
        if let Some((core, cores)) = core {
            gen.restrict(OwnerFilter::new(&cfg.workload.key_prefix, cores, core)?)?;
        }
        if let Some((map, node)) = &ctx.nodes[c % cfg.targets.len()] {
            gen.restrict(OwnerFilter::cluster(&cfg.workload.key_prefix, map, *node)?)?;
        }
        let budget = cfg.requests.map_or(u64::MAX, |r| share(r, c64, total).1);
        conns.push(Conn {
            stream,
            protocol: target.protocol,
            gen,
            sched: None,
            budget,
            inflight: VecDeque::with_capacity(cfg.pipeline.min(4096)),
            wbuf: Vec::with_capacity(16 * 1024),
            wpos: 0,
            rbuf: vec![0; READ_CHUNK],
            rpos: 0,
            rend: 0,
        });
    }
    Ok(conns)
}

/// One worker: returns its statistics and the time (ns since start) it stopped.
fn worker(ctx: &WorkerCtx) -> Result<WorkerResult, BenchError> {
    if let Some(core) = ctx.core {
        // Pinning is best effort: a failure (e.g. a restricted cpuset) only costs locality.
        let _ = core_affinity::set_for_current(core);
    }
    let poll = Poll::new();
    let setup_result = poll
        .map_err(BenchError::Io)
        .and_then(|p| setup(ctx, &p).map(|c| (p, c)));
    // Reach the start line whatever happened, so the coordinator never waits forever.
    let Some(start) = ctx.gate.arrive_and_wait() else {
        return Err(BenchError::Config("run aborted before the start".into()));
    };
    let (poll, conns) = match setup_result {
        Ok(x) => x,
        Err(e) => {
            ctx.stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
    };
    let result = drive(ctx, poll, conns, start);
    if result.is_err() {
        ctx.stop.store(true, Ordering::Relaxed);
    }
    result
}

fn drive(
    ctx: &WorkerCtx,
    mut poll: Poll,
    mut conns: Vec<Conn>,
    start: Instant,
) -> Result<WorkerResult, BenchError> {
    let cfg = &ctx.cfg;
    let now_ns = || start.elapsed().as_nanos() as u64;
    let warmup_ns = cfg.warmup.as_nanos() as u64;
    let end_ns = warmup_ns.saturating_add(cfg.duration.as_nanos() as u64);
    let interval_ns = cfg.interval.as_nanos() as u64;
    let spin_ns = cfg.spin.as_nanos() as u64;
    let mut encoders: Vec<(Protocol, Encoder)> = Vec::new();
    for c in &conns {
        if !encoders.iter().any(|(p, _)| *p == c.protocol) {
            encoders.push((c.protocol, Encoder::new(c.protocol, &cfg.workload)?));
        }
    }
    if let LoadModel::Open { rate, arrival } = cfg.load {
        let per_conn = rate / cfg.connections as f64;
        for (c, conn) in ctx.conns.iter().zip(&mut conns) {
            let phase = *c as f64 / cfg.connections as f64;
            let seed = cfg
                .seed
                .wrapping_add(*c as u64)
                .wrapping_mul(0xA24B_AED4_963E_E407);
            conn.sched = Some(Schedule::new(per_conn, arrival, 0, phase, seed));
        }
    }
    let mut stats = Stats::default();
    let mut interval = Stats::default();
    let mut interval_index = 0u64;
    let mut events = Events::with_capacity(1024);
    let mut timer = SendTimer::new(&poll)?;
    let mut done_local = 0u64;
    let drain_end_ns = end_ns.saturating_add(cfg.drain.as_nanos() as u64);
    let open_loop = matches!(cfg.load, LoadModel::Open { .. });
    let mut final_pass_done = false;
    loop {
        let now = now_ns();
        let stopped = ctx.stop.load(Ordering::Relaxed);
        // Open loop: one last pass after the deadline sends what was due before it, so the
        // final poll's sleep does not turn due requests into "unsent" ones.
        let final_pass = open_loop && now >= end_ns && !final_pass_done;
        final_pass_done |= final_pass;
        let sending = (now < end_ns || final_pass) && !stopped;
        // Report intervals this worker has left (replies drained after the deadline belong to
        // the last interval).
        let t = now.min(end_ns.saturating_sub(1));
        if t >= warmup_ns {
            let idx = (t - warmup_ns) / interval_ns;
            while interval_index < idx {
                let end = warmup_ns + (interval_index + 1) * interval_ns;
                send_interval(ctx, interval_index, end, &mut interval);
                interval_index += 1;
            }
        }
        let mut active = false;
        let mut next_due = u64::MAX;
        if sending {
            for conn in &mut conns {
                let enc = &mut encoders
                    .iter_mut()
                    .find(|(p, _)| *p == conn.protocol)
                    .expect("an encoder per protocol")
                    .1;
                fill(conn, enc, cfg.pipeline, now, warmup_ns, end_ns);
                flush(conn)?;
                if let Some(s) = &conn.sched {
                    if conn.budget > 0 && conn.inflight.len() < cfg.pipeline {
                        next_due = next_due.min(s.peek_ns());
                    }
                }
                active |= !conn.inflight.is_empty() || (conn.budget > 0 && conn.sched.is_some());
            }
        } else {
            // Draining: nothing new is sent; wait for replies already owed, up to a deadline.
            if stopped || now >= drain_end_ns {
                break;
            }
            for conn in &mut conns {
                flush(conn)?;
                active |= !conn.inflight.is_empty();
            }
        }
        if !active {
            break;
        }
        let now = now_ns();
        // Wake for the deadline, the end of the current interval (while sending: drained
        // replies all go to the last interval), or at least every IDLE_TICK.
        let wake_ns = if sending {
            end_ns.min(warmup_ns + (interval_index + 1) * interval_ns)
        } else {
            drain_end_ns
        };
        let mut timeout =
            Duration::from_nanos(wake_ns.saturating_sub(now).min(IDLE_TICK.as_nanos() as u64));
        let mut spinning = false;
        if next_due != u64::MAX {
            let wait = next_due.saturating_sub(now);
            if wait <= spin_ns {
                timeout = Duration::ZERO;
                spinning = true;
            } else {
                // Sleep until `spin` before the send: epoll's own timeout has 1 ms steps, the
                // timer has nanosecond ones.
                timer.arm(wait - spin_ns)?;
            }
        }
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        if spinning && events.is_empty() {
            std::thread::yield_now();
        }
        for ev in &events {
            if ev.token() == TIMER_TOKEN {
                timer.clear();
                continue;
            }
            let conn = &mut conns[ev.token().0];
            if ev.is_writable() {
                flush(conn)?;
            }
            if ev.is_readable() || ev.is_read_closed() {
                let n = read_replies(conn, now_ns, &mut stats, &mut interval)?;
                done_local += n;
            }
        }
        if done_local > 0 {
            ctx.completed.fetch_add(done_local, Ordering::Relaxed);
            done_local = 0;
        }
    }
    let stop_ns = now_ns().min(end_ns);
    send_interval(ctx, interval_index, stop_ns, &mut interval);
    let unfinished = conns
        .iter()
        .flat_map(|c| c.inflight.iter())
        .filter(|p| p.measured)
        .count() as u64;
    let unsent = conns
        .iter()
        .filter_map(|c| {
            let s = c.sched.as_ref()?;
            Some(s.backlog(warmup_ns, end_ns).min(c.budget))
        })
        .sum();
    Ok(WorkerResult {
        stats,
        stop_ns,
        unfinished,
        unsent,
    })
}

fn send_interval(ctx: &WorkerCtx, index: u64, end_ns: u64, interval: &mut Stats) {
    let stats = std::mem::take(interval);
    // The receiver outlives every worker; a send error means the run is being torn down.
    let _ = ctx.tx.send(IntervalMsg {
        index,
        end_ns,
        stats,
    });
}

/// Queues every request the connection may send now.
fn fill(conn: &mut Conn, enc: &mut Encoder, depth: usize, now: u64, warmup_ns: u64, end_ns: u64) {
    while conn.inflight.len() < depth && conn.budget > 0 {
        let intended = match &mut conn.sched {
            None => now,
            Some(s) => match s.pop_due(now.min(end_ns.saturating_sub(1))) {
                Some(t) => t,
                None => break,
            },
        };
        let op = conn.gen.next_op();
        let expect = enc.encode(&op, &mut conn.wbuf);
        let measured = intended >= warmup_ns;
        if measured && conn.budget != u64::MAX {
            conn.budget -= 1;
        }
        conn.inflight.push_back(Pending {
            kind: op.kind,
            expect,
            part: 0,
            outcome: Outcome::Ok,
            intended_ns: intended,
            sent_ns: now,
            measured,
        });
    }
}

/// Writes queued bytes until the socket would block.
fn flush(conn: &mut Conn) -> Result<(), BenchError> {
    while conn.wpos < conn.wbuf.len() {
        match conn.stream.write(&conn.wbuf[conn.wpos..]) {
            Ok(0) => {
                return Err(BenchError::Protocol(
                    "server stopped accepting bytes".into(),
                ))
            }
            Ok(n) => conn.wpos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    if conn.wpos == conn.wbuf.len() {
        conn.wbuf.clear();
        conn.wpos = 0;
    }
    Ok(())
}

/// Reads until the socket would block, completing requests in order. Returns completions.
fn read_replies(
    conn: &mut Conn,
    now_ns: impl Fn() -> u64,
    stats: &mut Stats,
    interval: &mut Stats,
) -> Result<u64, BenchError> {
    let mut completed = 0;
    loop {
        if conn.rbuf.len() - conn.rend < READ_CHUNK / 4 {
            if conn.rpos > 0 {
                conn.rbuf.copy_within(conn.rpos..conn.rend, 0);
                conn.rend -= conn.rpos;
                conn.rpos = 0;
            }
            if conn.rbuf.len() - conn.rend < READ_CHUNK / 4 {
                let grown = conn.rbuf.len() * 2;
                conn.rbuf.resize(grown, 0);
            }
        }
        let n = match conn.stream.read(&mut conn.rbuf[conn.rend..]) {
            Ok(0) => return Err(BenchError::Protocol("server closed the connection".into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        conn.rend += n;
        let now = now_ns();
        while conn.rpos < conn.rend {
            let Some(front) = conn.inflight.front_mut() else {
                return Err(BenchError::Protocol(
                    "reply without a request in flight".into(),
                ));
            };
            let part = front.expect.parts[usize::from(front.part)];
            let Some((outcome, used)) =
                codec::parse_reply(conn.protocol, part, &conn.rbuf[conn.rpos..conn.rend])?
            else {
                break;
            };
            conn.rpos += used;
            front.outcome = front.outcome.max(outcome);
            front.part += 1;
            if front.part == front.expect.len {
                let p = conn.inflight.pop_front().expect("front exists");
                completed += 1;
                if p.measured {
                    let lat = now.saturating_sub(p.intended_ns);
                    let svc = now.saturating_sub(p.sent_ns);
                    stats.record(p.kind, p.outcome, lat, svc);
                    interval.record(p.kind, p.outcome, lat, svc);
                }
            }
        }
        if conn.rpos == conn.rend {
            conn.rpos = 0;
            conn.rend = 0;
        }
    }
    Ok(completed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t: Target = "redis=resp://127.0.0.1:6379".parse().unwrap();
        assert_eq!((t.label.as_str(), t.protocol), ("redis", Protocol::Resp));
        let t: Target = "memcache://localhost:11211".parse().unwrap();
        assert_eq!(t.protocol, Protocol::Memcache);
        assert_eq!(t.label, "localhost:11211");
        assert!("nope".parse::<Target>().is_err());
        assert!("x=ftp://a:1".parse::<Target>().is_err());
        let t: Target = "own=127.0.0.1:7000?route=owner".parse().unwrap();
        assert_eq!((t.addr.as_str(), t.route), ("127.0.0.1:7000", Route::Owner));
        assert_eq!("127.0.0.1:1".parse::<Target>().unwrap().route, Route::Any);
        assert!("127.0.0.1:1?route=nearest".parse::<Target>().is_err());
        assert!("127.0.0.1:1?pool=3".parse::<Target>().is_err());
        let t: Target = "c=127.0.0.1:7000?route=cluster".parse().unwrap();
        assert_eq!(t.route, Route::Cluster);
        assert!("memcache://127.0.0.1:1?route=cluster"
            .parse::<Target>()
            .is_err());
        assert!("memcache://127.0.0.1:1?route=owner"
            .parse::<Target>()
            .is_err());
    }

    #[test]
    fn probe_window_spans_warmup_end_to_deadline_or_stop() {
        use std::sync::atomic::AtomicU64;
        let calls = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&calls);
        // Each sample returns how many samples were taken before it.
        let probe: Probe = Arc::new(move || Some(c.fetch_add(1, Ordering::SeqCst) as f64));
        let now = Instant::now();
        // Runs to its deadline: two samples about 40 ms apart.
        let (_tx, rx) = mpsc::channel::<()>();
        let w = sample_window(
            &probe,
            &rx,
            now + Duration::from_millis(20),
            now + Duration::from_millis(60),
        )
        .expect("a window");
        assert_eq!((w.start, w.end), (0.0, 1.0));
        assert!(w.seconds >= 0.035 && w.seconds < 5.0, "{}", w.seconds);
        assert!((w.rate() - 1.0 / w.seconds).abs() < 1e-9);
        // Stopped before the warm-up ended: no window, and no sample taken.
        let (tx, rx) = mpsc::channel::<()>();
        drop(tx);
        let far = Instant::now() + Duration::from_secs(3600);
        assert_eq!(sample_window(&probe, &rx, far, far), None);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Stopped during the window: the end is sampled at the stop, not at the deadline.
        let (tx, rx) = mpsc::channel::<()>();
        let t = std::thread::spawn({
            let probe = Arc::clone(&probe);
            move || sample_window(&probe, &rx, Instant::now(), far)
        });
        std::thread::sleep(Duration::from_millis(20));
        drop(tx);
        let w = t.join().unwrap().expect("a window");
        assert!(w.seconds < 60.0, "{}", w.seconds);
        assert!((w.end - w.start - 1.0).abs() < 1e-12, "{w:?}");
        // A probe that cannot be read gives no window.
        let broken: Probe = Arc::new(|| None);
        let (_tx, rx) = mpsc::channel::<()>();
        assert_eq!(
            sample_window(&broken, &rx, Instant::now(), Instant::now()),
            None
        );
        let empty = ProbeWindow {
            start: 1.0,
            end: 2.0,
            seconds: 0.0,
        };
        assert!(empty.rate().abs() < 1e-12);
    }

    #[test]
    fn shares_partition_exactly() {
        for (total, parts) in [(10u64, 3u64), (2, 5), (1_000_003, 7)] {
            let mut next = 0;
            for i in 0..parts {
                let (s, l) = share(total, i, parts);
                assert_eq!(s, next);
                next += l;
            }
            assert_eq!(next, total);
        }
    }
}
