//! The admin port: an HTTP/1.1 listener on core 0 serving `/metrics` (Prometheus text format)
//! and `/health`, `/health/live`, `/health/ready`. Off unless `[admin] port` is set.
//!
//! Owns [`AdminConfig`], the per-core command latency histograms ([`Latency`], filled by each
//! core's connections through a [`BatchTimer`]) and the server ([`serve`]).
//!
//! - Counters and gauges are each core's `Op::Stats` (the INFO `shards` fields), gathered per
//!   scrape: one message per core, all sent at once and awaited with `probe_timeout_ms`. A core
//!   that does not answer shows as `tessera_core_up{core} 0`; node totals then cover the cores
//!   that did. The same probe is the liveness check.
//! - Latency histograms are single-writer relaxed atomics (a plain load and store on x86: no
//!   locked instruction on the data path) so a scrape reads them without a round trip. Buckets
//!   are fixed powers of two (4 us .. 8.4 s) rather than HdrHistogram: Prometheus buckets add
//!   up across cores and nodes (`histogram_quantile(sum by (le) ...)`), a summary's quantiles
//!   do not; and a power-of-two bucket is one `leading_zeros`, with 23 counters per command
//!   instead of an HdrHistogram's kilobytes. Measured cost (tesserad 1 core, redis-benchmark
//!   GET+SET, server CPU per op, 3 alternating rounds, before -> after): P=1 16.12 -> 15.90 us,
//!   P=16 3.07 -> 3.05 us, P=64 2.38 -> 2.41 us: inside the run-to-run noise. In isolation
//!   (`examples/latency_cost.rs`, a loaded 2-CPU VM): ~130-150 ns per read batch, mostly the
//!   two clock reads, and ~6-14 ns per request in batches of 16 and 64.
//! - The exposition text is written by `prometheus-client`; requests are parsed by `httparse`.
//!
//! Invariants: nothing read from an admin socket is unbounded (request head bytes, header
//! count, time to read, time to write, connections); a bad request gets a 4xx and the
//! connection closes; the server runs in core 0's low-priority task queue, so scrapes yield
//! to client requests.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use serde::Deserialize;
use tessera_engine::Reply;

use crate::commands::{Spec, COMMANDS};
use crate::config::ConfigError;
use crate::core::{Core, Op};
use crate::runtime::{self, TcpListener, TcpStream};

/// The `[admin]` table: the HTTP port for metrics and health checks.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// TCP port of the admin listener. Absent = no admin port (the default); 0 = any free port.
    pub port: Option<u16>,
    /// Address of the admin listener. Metrics and health are not authenticated, so keep it on
    /// loopback or a private interface. Default `127.0.0.1`.
    pub bind: IpAddr,
    /// Largest request head (request line and headers), bytes; a larger one gets `431`.
    /// Default 8192, 256..=1048576.
    pub request_bytes_max: usize,
    /// Most headers in a request; more gets `431`. Default 64, 1..=1024.
    pub headers_max: usize,
    /// Time allowed to receive a whole request head, and again to send the response,
    /// milliseconds. A request not complete in time gets `408`. Default 5000, 1..=600000.
    pub timeout_ms: u64,
    /// Most admin connections open at once; further ones are closed on accept. Default 16,
    /// 1..=1024.
    pub connections_max: usize,
    /// How long every core together may take to answer a probe (liveness, a scrape),
    /// milliseconds; a core that does not answer in time is reported down. Default 1000,
    /// 1..=60000.
    pub probe_timeout_ms: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            port: None,
            bind: IpAddr::from([127, 0, 0, 1]),
            request_bytes_max: 8192,
            headers_max: 64,
            timeout_ms: 5000,
            connections_max: 16,
            probe_timeout_ms: 1000,
        }
    }
}

impl AdminConfig {
    /// Where to listen, when the admin port is on.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.port.map(|p| SocketAddr::new(self.bind, p))
    }

    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        if !(256..=1 << 20).contains(&self.request_bytes_max) {
            return bad("admin.request_bytes_max", "must be in 256..=1048576");
        }
        if !(1..=1024).contains(&self.headers_max) {
            return bad("admin.headers_max", "must be in 1..=1024");
        }
        if !(1..=600_000).contains(&self.timeout_ms) {
            return bad("admin.timeout_ms", "must be in 1..=600000");
        }
        if !(1..=1024).contains(&self.connections_max) {
            return bad("admin.connections_max", "must be in 1..=1024");
        }
        if !(1..=60_000).contains(&self.probe_timeout_ms) {
            return bad("admin.probe_timeout_ms", "must be in 1..=60000");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Latency histograms

/// Bounded latency buckets; bucket `i` holds latencies up to `4 << i` microseconds, and one
/// more bucket holds the rest (`+Inf`).
pub const LATENCY_BUCKETS: usize = 22;

/// Upper bound of bucket `i`, microseconds.
fn bucket_bound_us(i: usize) -> u64 {
    4 << i
}

/// The bucket of a latency of `micros` (rounded up): the first whose bound is `>= micros`.
fn bucket_of(micros: u64) -> usize {
    if micros <= 4 {
        0
    } else {
        ((64 - (micros - 1).leading_zeros()) as usize - 2).min(LATENCY_BUCKETS)
    }
}

/// Adds `n` to a counter only one thread writes: a relaxed load and store, which compile to
/// plain moves (no locked read-modify-write), while other threads may read it at any time.
fn bump(a: &AtomicU64, n: u64) {
    a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// One command's histogram on one core.
struct Hist {
    buckets: [AtomicU64; LATENCY_BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl Hist {
    fn new() -> Hist {
        Hist {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// One core's request latency histograms, one per command of the command table. Written only
/// by that core's executor (its connections); read by the admin server on core 0.
pub struct Latency {
    per_command: Box<[Hist]>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            per_command: COMMANDS.iter().map(|_| Hist::new()).collect(),
        }
    }
}

impl Latency {
    /// Records `n` requests of command `index` that each took `nanos`. Only the owning core
    /// calls this.
    fn record(&self, index: usize, bucket: usize, nanos: u64) {
        if let Some(h) = self.per_command.get(index) {
            bump(&h.buckets[bucket], 1);
            bump(&h.sum_ns, nanos);
        }
    }

    /// Adds this core's histograms into `into` (one entry per command).
    fn add_into(&self, into: &mut [HistTotals]) {
        for (h, t) in self.per_command.iter().zip(into.iter_mut()) {
            for (b, tb) in h.buckets.iter().zip(t.buckets.iter_mut()) {
                *tb += b.load(Ordering::Relaxed);
            }
            t.sum_ns += h.sum_ns.load(Ordering::Relaxed);
        }
    }
}

/// The position of `spec` in [`COMMANDS`] (specs are only ever references into that table).
fn command_index(spec: &'static Spec) -> Option<usize> {
    let base = COMMANDS.as_ptr() as usize;
    let at = std::ptr::from_ref(spec) as usize;
    let index = at.checked_sub(base)? / std::mem::size_of::<Spec>();
    (index < COMMANDS.len() && std::ptr::eq(&COMMANDS[index], spec)).then_some(index)
}

/// Times the requests of one read of a connection: from when they were parsed to when their
/// replies were handed to the socket. Every request of the batch waits for the same write, so
/// each gets the batch's time. Two clock reads per batch, a push per request.
#[derive(Default)]
pub struct BatchTimer {
    started: Option<Instant>,
    commands: Vec<u16>,
}

impl BatchTimer {
    /// A batch starts: its requests follow.
    pub fn begin(&mut self) {
        self.commands.clear();
        self.started = Some(Instant::now());
    }

    /// One request of the batch was a known command (ignored outside a batch).
    pub fn note(&mut self, spec: &'static Spec) {
        if self.started.is_some() {
            if let Some(i) = command_index(spec) {
                self.commands.push(i as u16);
            }
        }
    }

    /// The batch's replies are written: record each request into this core's histograms.
    pub fn end(&mut self, latency: &Latency) {
        let Some(started) = self.started.take() else {
            return;
        };
        if self.commands.is_empty() {
            return;
        }
        let nanos = started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        let bucket = bucket_of(nanos.div_ceil(1000));
        for &c in &self.commands {
            latency.record(usize::from(c), bucket, nanos);
        }
        self.commands.clear();
    }
}

/// Sum of every core's histogram of one command.
#[derive(Clone, Default)]
struct HistTotals {
    buckets: [u64; LATENCY_BUCKETS + 1],
    sum_ns: u64,
}

// ---------------------------------------------------------------------------------------------
// Gathering

/// How a per-core stat is exported.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// One `Op::Stats` field as a metric: field name, metric name, unit, kind, help.
struct Def {
    field: &'static str,
    name: &'static str,
    unit: Option<Unit>,
    kind: Kind,
    help: &'static str,
}

const fn def(
    field: &'static str,
    name: &'static str,
    unit: Option<Unit>,
    kind: Kind,
    help: &'static str,
) -> Def {
    Def {
        field,
        name,
        unit,
        kind,
        help,
    }
}

const B: Option<Unit> = Some(Unit::Bytes);

/// Every exported `Op::Stats` field. Exported twice: per core (`tessera_core_<name>{core}`)
/// and summed over the node (`tessera_<name>`).
#[rustfmt::skip]
const DEFS: &[Def] = &[
    def("keys", "keys", None, Kind::Gauge, "Keys in all maps"),
    def("default_map_keys", "default_map_keys", None, Kind::Gauge, "Keys in the default map (DBSIZE)"),
    def("keys_with_ttl", "keys_with_ttl", None, Kind::Gauge, "Keys with a TTL"),
    def("maps", "maps", None, Kind::Gauge, "Maps present"),
    def("used_memory", "memory_used", B, Kind::Gauge, "Bytes accounted against maxmemory"),
    def("live_bytes", "memory_live", B, Kind::Gauge, "Bytes of live entries and out-of-line values"),
    def("garbage_bytes", "memory_garbage", B, Kind::Gauge, "Bytes of dead entry versions not yet compacted"),
    def("table_bytes", "memory_tables_allocated", B, Kind::Gauge, "Bytes of entry tables as allocated"),
    def("index_bytes", "memory_index_allocated", B, Kind::Gauge, "Bytes of the key index as allocated"),
    def("maxmemory", "maxmemory", B, Kind::Gauge, "Memory budget (0 = unlimited)"),
    def("hits", "keyspace_hits", None, Kind::Counter, "Reads that found their key"),
    def("misses", "keyspace_misses", None, Kind::Counter, "Reads that did not find their key"),
    def("evicted_keys", "evicted_keys", None, Kind::Counter, "Keys evicted for memory"),
    def("expired_keys", "expired_keys", None, Kind::Counter, "Keys removed because their TTL passed"),
    def("expired_active", "expired_by_background_keys", None, Kind::Counter, "Expired keys found by the background sweep"),
    def("compacted_bytes", "compacted", B, Kind::Counter, "Bytes moved by compaction"),
    def("bg_ticks", "background_ticks", None, Kind::Counter, "Background ticks (active expiry + compaction step) run"),
    def("bg_tick_us_total", "background_tick_microseconds", None, Kind::Counter, "Time spent in background ticks, microseconds"),
    def("bg_tick_us_max", "background_tick_max_microseconds", None, Kind::Gauge, "Longest background tick so far, microseconds"),
    def("migration_calls", "migration_calls", None, Kind::Counter, "Calls into the core's slot migrations (tables, stream messages, timer)"),
    def("migration_us_total", "migration_call_microseconds", None, Kind::Counter, "Time spent in slot migration calls, microseconds"),
    def("migration_us_max", "migration_call_max_microseconds", None, Kind::Gauge, "Longest slot migration call so far, microseconds"),
    def("migration_calls_over_1ms", "migration_calls_over_1ms", None, Kind::Counter, "Slot migration calls that took over a millisecond"),
    def("migration_pauses", "migration_pauses", None, Kind::Counter, "Pauses of the migration timer between turns (migration_duty_percent)"),
    def("migration_pause_us_total", "migration_pause_microseconds", None, Kind::Counter, "Time the migration timer paused between turns, microseconds"),
    def("migration_turns_cut", "migration_turns_cut", None, Kind::Counter, "Migration calls that stopped at migration_turn_ops_max with more to send"),
    def("migration_keys_dropped", "migration_keys_dropped", None, Kind::Counter, "Keys removed from slots that left the core, in bounded steps"),
    def("migration_sources_started", "migration_sources_started", None, Kind::Counter, "Slot streams this core started as source (restarts included)"),
    def("migration_sources_committed", "migration_sources_committed", None, Kind::Counter, "Slots that left this core by a committed migration"),
    def("migration_sources_aborted", "migration_sources_aborted", None, Kind::Counter, "Slot streams out of this core abandoned (usually restarted)"),
    def("migration_targets_committed", "migration_targets_committed", None, Kind::Counter, "Slots that arrived on this core by a committed migration"),
    def("migration_targets_aborted", "migration_targets_aborted", None, Kind::Counter, "Slot streams into this core abandoned (what arrived was dropped)"),
    def("migration_streams_refused", "migration_streams_refused", None, Kind::Counter, "Slot streams this core refused (not planned by its table, or joined mid-way)"),
    def("migration_verified_resets", "migration_verified_resets", None, Kind::Counter, "Verified migration targets sent back to receiving by a stream from sequence 0"),
    def("migration_commits_unverified", "migration_commits_unverified", None, Kind::Counter, "Tables that named this core owner of a slot it had not verified (its data is lost)"),
    def("migration_stale_messages", "migration_stale_messages", None, Kind::Counter, "Migration stream messages of an older attempt, delivered late and ignored"),
    def("migration_removals_teed", "migration_removals_teed", None, Kind::Counter, "Evicted or expired keys of migrating slots teed to their target as deletes"),
    def("commands", "commands_processed", None, Kind::Counter, "Commands received on client connections"),
    def("executed", "commands_executed", None, Kind::Counter, "Data commands executed on the shard (owner side)"),
    def("remote_in", "cross_core_ops_received", None, Kind::Counter, "Ops received from other cores and application threads"),
    def("batches_out", "cross_core_batches_sent", None, Kind::Counter, "Batches sent to other cores"),
    def("mesh_full", "cross_core_sends_full", None, Kind::Counter, "Sends that found the target's request channel full"),
    def("mesh_backlog", "cross_core_backlog", None, Kind::Gauge, "Requests waiting in the core's channel"),
    def("connections", "connections", None, Kind::Gauge, "Client connections open"),
    def("connections_total", "connections_received", None, Kind::Counter, "Client connections accepted"),
    def("rejected_connections", "connections_rejected", None, Kind::Counter, "Connections refused at connections_max"),
    def("net_in_bytes", "net_input", B, Kind::Counter, "Bytes read from clients"),
    def("net_out_bytes", "net_output", B, Kind::Counter, "Bytes written to clients"),
    def("pubsub_channels", "pubsub_channels", None, Kind::Gauge, "Channels with subscribers"),
];

/// `Op::Stats` fields that are labels or identities, not metrics.
const NOT_METRICS: &[&str] = &["core", "cpu"];

/// Whether an `Op::Stats` field is exported (tests check every field is).
pub fn is_exported(field: &str) -> bool {
    NOT_METRICS.contains(&field) || DEFS.iter().any(|d| d.field == field)
}

/// One core's `Op::Stats`, by field name.
type Counters = HashMap<String, u64>;

fn counters(reply: Option<Reply>) -> Option<Counters> {
    let Some(Reply::Map(pairs)) = reply else {
        return None;
    };
    let mut out = HashMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        if let (Reply::Simple(k), Reply::Int(n)) = (k, v) {
            out.insert(String::from_utf8_lossy(&k).into_owned(), n.max(0) as u64);
        }
    }
    Some(out)
}

/// Asks every core for its `Op::Stats`, all at once, waiting at most `probe_timeout_ms`
/// altogether; `None` for a core that did not answer in time.
pub async fn probe(core: &Core) -> Vec<Option<Counters>> {
    let timeout = Duration::from_millis(core.shared.config.admin.probe_timeout_ms);
    let deadline = Instant::now() + timeout;
    let mut sent = Vec::with_capacity(core.shared.cores);
    for c in 0..core.shared.cores {
        if c == core.id {
            sent.push(None);
        } else {
            sent.push(core.send(c, vec![Op::Stats]));
        }
    }
    let mut out = Vec::with_capacity(sent.len());
    for (c, f) in sent.into_iter().enumerate() {
        let reply = if c == core.id {
            Some(core.execute(Op::Stats, runtime::now_ms()))
        } else if let Some(f) = f {
            within(deadline, f.wait(core, 1))
                .await
                .and_then(|mut v| v.pop())
        } else {
            None
        };
        // A stopped core answers with an error reply: that is down too.
        out.push(counters(reply));
    }
    out
}

/// This node's view of the cluster, as core 0 sees it.
#[derive(Debug)]
struct ClusterSample {
    enabled: bool,
    epoch: u64,
    members: u64,
    alive: u64,
    quorum: bool,
    /// Slots this node is primary of.
    owned_slots: u64,
}

/// Everything one scrape exposes, gathered on core 0.
#[derive(Debug)]
struct Snapshot {
    cluster: ClusterSample,
    cores: Vec<Option<Counters>>,
    latency: Vec<(&'static str, HistTotals)>,
    clients: u64,
    clients_max: u64,
    uptime_s: u64,
    resident_bytes: u64,
}

impl fmt::Debug for HistTotals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistTotals")
            .field("count", &self.buckets.iter().sum::<u64>())
            .finish_non_exhaustive()
    }
}

async fn snapshot(core: &Core) -> Snapshot {
    let cores = probe(core).await;
    let shared = &core.shared;
    let mut totals = vec![HistTotals::default(); COMMANDS.len()];
    for l in &shared.latency {
        l.add_into(&mut totals);
    }
    let latency = COMMANDS
        .iter()
        .zip(totals)
        .filter(|(_, t)| t.buckets.iter().any(|&n| n > 0))
        .map(|(s, t)| (s.name, t))
        .collect();
    let cluster = {
        let view = core.cluster.borrow();
        let table = view.table.as_deref();
        ClusterSample {
            enabled: view.enabled,
            epoch: view.epoch(),
            members: table.map_or(0, |t| t.nodes.len() as u64),
            alive: view.live.len() as u64,
            quorum: view.quorum,
            owned_slots: match (table, view.me_idx) {
                (Some(t), Some(me)) => {
                    t.slots.iter().filter(|e| e.primary.node == me).count() as u64
                }
                _ => 0,
            },
        }
    };
    Snapshot {
        cluster,
        cores,
        latency,
        clients: shared.clients.load(Ordering::Relaxed) as u64,
        clients_max: shared.config.net.connections_max as u64,
        uptime_s: shared.started.elapsed().as_secs(),
        resident_bytes: resident_bytes(),
    }
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let gauge = |enc: &mut DescriptorEncoder,
                     name: &str,
                     unit: Option<&Unit>,
                     help: &str,
                     v: u64|
         -> fmt::Result {
            enc.encode_descriptor(name, help, unit, MetricType::Gauge)?
                .encode_gauge(&v)
        };
        gauge(&mut enc, "up", None, "1 while the node answers scrapes", 1)?;
        gauge(
            &mut enc,
            "cores",
            None,
            "Executors (one per core)",
            self.cores.len() as u64,
        )?;
        gauge(
            &mut enc,
            "uptime",
            Some(&Unit::Seconds),
            "Time since the node started",
            self.uptime_s,
        )?;
        gauge(
            &mut enc,
            "connected_clients",
            None,
            "Client connections open on the node",
            self.clients,
        )?;
        gauge(
            &mut enc,
            "connections_max",
            None,
            "Most client connections allowed",
            self.clients_max,
        )?;
        gauge(
            &mut enc,
            "process_resident_memory",
            Some(&Unit::Bytes),
            "Resident set size of the process",
            self.resident_bytes,
        )?;
        let c = &self.cluster;
        gauge(
            &mut enc,
            "cluster_enabled",
            None,
            "1 when the node runs in cluster mode",
            u64::from(c.enabled),
        )?;
        gauge(
            &mut enc,
            "cluster_epoch",
            None,
            "Epoch of the partition table this node routes by (0: none yet)",
            c.epoch,
        )?;
        gauge(
            &mut enc,
            "cluster_members",
            None,
            "Members of that partition table",
            c.members,
        )?;
        gauge(
            &mut enc,
            "cluster_alive_members",
            None,
            "Members this node's membership sees alive",
            c.alive,
        )?;
        gauge(
            &mut enc,
            "cluster_quorum",
            None,
            "1 while the live members reach the quorum (writes allowed)",
            u64::from(c.quorum),
        )?;
        gauge(
            &mut enc,
            "cluster_owned_slots",
            None,
            "Slots this node is primary of",
            c.owned_slots,
        )?;
        {
            let mut m =
                enc.encode_descriptor("build", "Version of the node", None, MetricType::Info)?;
            m.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        }
        {
            let mut m = enc.encode_descriptor(
                "core_up",
                "1 when the core answered this scrape within admin.probe_timeout_ms",
                None,
                MetricType::Gauge,
            )?;
            for (i, c) in self.cores.iter().enumerate() {
                let label = [("core", i.to_string())];
                m.encode_family(&label)?
                    .encode_gauge(&u64::from(c.is_some()))?;
            }
        }
        for d in DEFS {
            let values: Vec<(usize, u64)> = self
                .cores
                .iter()
                .enumerate()
                .filter_map(|(i, c)| Some((i, *c.as_ref()?.get(d.field)?)))
                .collect();
            if values.is_empty() {
                continue;
            }
            let total: u64 = values.iter().map(|(_, v)| v).sum();
            let ty = match d.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let core_name = format!("core_{}", d.name);
            {
                let mut m = enc.encode_descriptor(
                    d.name,
                    &format!("{} (node)", d.help),
                    d.unit.as_ref(),
                    ty,
                )?;
                write_value(&mut m, d.kind, total)?;
            }
            let mut m = enc.encode_descriptor(
                &core_name,
                &format!("{} (per core)", d.help),
                d.unit.as_ref(),
                ty,
            )?;
            for (i, v) in values {
                let label = [("core", i.to_string())];
                let mut f = m.encode_family(&label)?;
                write_value(&mut f, d.kind, v)?;
            }
        }
        if !self.latency.is_empty() {
            let mut m = enc.encode_descriptor(
                "command_latency",
                "Server-side request latency by command: from the request being parsed to its reply being handed to the socket",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            let bounds: Vec<f64> = (0..LATENCY_BUCKETS)
                .map(|i| bucket_bound_us(i) as f64 / 1e6)
                .chain(std::iter::once(f64::INFINITY))
                .collect();
            for (name, h) in &self.latency {
                let buckets: Vec<(f64, u64)> = bounds
                    .iter()
                    .copied()
                    .zip(h.buckets.iter().copied())
                    .collect();
                let count = h.buckets.iter().sum();
                let label = [("cmd", *name)];
                m.encode_family(&label)?.encode_histogram::<NoLabelSet>(
                    h.sum_ns as f64 / 1e9,
                    count,
                    &buckets,
                    None,
                )?;
            }
        }
        Ok(())
    }
}

fn write_value(
    m: &mut prometheus_client::encoding::MetricEncoder,
    kind: Kind,
    v: u64,
) -> fmt::Result {
    match kind {
        Kind::Counter => m.encode_counter::<NoLabelSet, u64, u64>(&v, None),
        Kind::Gauge => m.encode_gauge(&v),
    }
}

/// The `/metrics` body in the Prometheus text format (version 0.0.4).
async fn metrics_text(core: &Core) -> Result<String, fmt::Error> {
    let snap = snapshot(core).await;
    let mut registry = Registry::with_prefix("tessera");
    registry.register_collector(Box::new(snap));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// Liveness: every core answered a probe in time.
async fn live(core: &Core) -> Result<(), String> {
    let down: Vec<String> = probe(core)
        .await
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_none())
        .map(|(i, _)| i.to_string())
        .collect();
    if down.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "core(s) {} did not answer within {} ms",
            down.join(","),
            core.shared.config.admin.probe_timeout_ms
        ))
    }
}

/// Readiness: the node accepts clients (it listens, is not shutting down, has room).
fn ready(core: &Core) -> Result<(), String> {
    let shared = &core.shared;
    if !shared.config.net.listen {
        return Err("the node has no client listener".into());
    }
    if core.shutdown.is_fired() || shared.shutdown_requested.load(Ordering::SeqCst) {
        return Err("shutting down".into());
    }
    if shared.clients.load(Ordering::Relaxed) >= shared.config.net.connections_max {
        return Err("connections_max reached".into());
    }
    // In cluster mode keyed commands get -CLUSTERDOWN without a table, and writes without
    // quorum: such a node does not serve clients yet.
    let view = core.cluster.borrow();
    if view.enabled {
        if view.table.is_none() {
            return Err("cluster: no partition table yet".into());
        }
        if !view.quorum {
            return Err("cluster: no quorum of live members".into());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// Runs `f` until `deadline`; `None` if it was not done by then.
async fn within<T>(deadline: Instant, f: impl Future<Output = T>) -> Option<T> {
    let left = deadline.saturating_duration_since(Instant::now());
    futures_lite::future::or(async { Some(f.await) }, async {
        runtime::sleep(left).await;
        None
    })
    .await
}

/// Why a request head could not be read.
#[derive(Debug, PartialEq, Eq)]
enum ReadError {
    /// The peer closed or reset before sending anything: nothing to answer.
    Gone,
    /// Larger than `request_bytes_max` or more than `headers_max` headers.
    TooLarge,
    /// Not an HTTP/1.x request head.
    Malformed,
}

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    method: String,
    path: String,
}

/// Parses what has arrived so far: `Ok(None)` when more bytes are needed.
fn parse_head(buf: &[u8], headers_max: usize) -> Result<Option<Head>, ReadError> {
    let mut headers = vec![httparse::EMPTY_HEADER; headers_max];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => Ok(Some(Head {
            method: req.method.unwrap_or_default().to_owned(),
            path: req.path.unwrap_or_default().to_owned(),
        })),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(ReadError::TooLarge),
        Err(_) => Err(ReadError::Malformed),
    }
}

/// Reads one request head, never buffering more than `request_bytes_max`.
async fn read_head(
    stream: &mut TcpStream,
    bytes_max: usize,
    headers_max: usize,
) -> Result<Head, ReadError> {
    let mut buf = Vec::with_capacity(1024.min(bytes_max));
    let mut chunk = [0u8; 1024];
    loop {
        let room = (bytes_max - buf.len()).min(chunk.len());
        if room == 0 {
            return Err(ReadError::TooLarge);
        }
        let n = match stream.read(&mut chunk[..room]).await {
            Ok(0) | Err(_) if buf.is_empty() => return Err(ReadError::Gone),
            Ok(0) | Err(_) => return Err(ReadError::Malformed),
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = parse_head(&buf, headers_max)? {
            return Ok(head);
        }
    }
}

/// A response to send.
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    allow: bool,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: false,
        }
    }

    fn encode(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Unknown",
        };
        let allow = if self.allow {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// The response to a well-formed request.
async fn route(core: &Core, head: &Head) -> Response {
    if head.method != "GET" && head.method != "HEAD" {
        let mut r = Response::text(405, "only GET and HEAD\n");
        r.allow = true;
        return r;
    }
    let path = head.path.split('?').next().unwrap_or("");
    match path {
        "/metrics" => match metrics_text(core).await {
            Ok(body) => Response {
                status: 200,
                content_type: prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                body,
                allow: false,
            },
            Err(_) => Response::text(500, "cannot encode metrics\n"),
        },
        "/health" | "/health/live" | "/health/ready" => {
            let mut body = String::new();
            let mut healthy = true;
            if path != "/health/ready" {
                let l = live(core).await;
                healthy &= l.is_ok();
                let _ = writeln!(body, "live: {}", l.err().unwrap_or_else(|| "ok".into()));
            }
            if path != "/health/live" {
                let r = ready(core);
                healthy &= r.is_ok();
                let _ = writeln!(body, "ready: {}", r.err().unwrap_or_else(|| "ok".into()));
            }
            Response::text(if healthy { 200 } else { 503 }, body)
        }
        _ => Response::text(
            404,
            "not found: try /metrics, /health, /health/live, /health/ready\n",
        ),
    }
}

/// One of the `connections_max` admin connection slots, given back when dropped.
struct Slot(Rc<Cell<usize>>);

impl Slot {
    fn take(open: &Rc<Cell<usize>>) -> Slot {
        open.set(open.get() + 1);
        Slot(Rc::clone(open))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Serves one admin connection: one request, one response, close. The slot is given back
/// before the close, so a client that saw the close finds it free.
async fn serve_one(core: &Core, mut stream: TcpStream, slot: Slot) {
    let cfg = &core.shared.config.admin;
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let deadline = Instant::now() + timeout;
    let read = within(
        deadline,
        read_head(&mut stream, cfg.request_bytes_max, cfg.headers_max),
    )
    .await;
    let (response, head_only) = match read {
        None => (Response::text(408, "request not received in time\n"), false),
        Some(Err(ReadError::Gone)) => return,
        Some(Err(ReadError::TooLarge)) => (Response::text(431, "request head too large\n"), false),
        Some(Err(ReadError::Malformed)) => {
            (Response::text(400, "not an HTTP/1.x request\n"), false)
        }
        Some(Ok(head)) => {
            let r = within(deadline, route(core, &head))
                .await
                .unwrap_or_else(|| Response::text(503, "timed out gathering the answer\n"));
            (r, head.method == "HEAD")
        }
    };
    let bytes = response.encode(head_only);
    let deadline = Instant::now() + timeout;
    let written = within(deadline, stream.write_all(&bytes)).await.is_some();
    drop(slot);
    if written {
        let _ = within(deadline, stream.close()).await;
    }
}

/// Accepts admin connections on `listener` until the core shuts down. Runs on core 0.
pub async fn serve(core: Rc<Core>, listener: TcpListener) {
    let open = Rc::new(Cell::new(0usize));
    let max = core.shared.config.admin.connections_max;
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            core.shutdown.wait().await;
            None
        })
        .await;
        match accepted {
            Some(Ok(stream)) => {
                if open.get() >= max {
                    tracing::debug!("admin connection refused: admin.connections_max reached");
                    drop(stream);
                    continue;
                }
                let slot = Slot::take(&open);
                let core = Rc::clone(&core);
                runtime::spawn(async move { serve_one(&core, stream, slot).await });
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "admin accept failed");
                runtime::sleep(Duration::from_millis(10)).await;
            }
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_the_first_bound_not_below_the_value() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(4), 0);
        assert_eq!(bucket_of(5), 1);
        assert_eq!(bucket_of(8), 1);
        assert_eq!(bucket_of(9), 2);
        for i in 0..LATENCY_BUCKETS {
            let b = bucket_bound_us(i);
            assert_eq!(bucket_of(b), i, "bound {b}");
            assert_eq!(bucket_of(b + 1), i + 1, "just above {b}");
        }
        assert_eq!(bucket_of(u64::MAX), LATENCY_BUCKETS);
    }

    #[test]
    fn command_index_finds_table_rows_only() {
        for (i, s) in COMMANDS.iter().enumerate() {
            assert_eq!(command_index(s), Some(i));
        }
        let stray: &'static Spec = Box::leak(Box::new(Spec {
            name: "x",
            arity: 1,
            flags: &[],
            first_key: 0,
            last_key: 0,
            step: 0,
            route: crate::commands::Route::Conn,
            group: "",
            summary: "",
        }));
        assert_eq!(command_index(stray), None);
    }

    #[test]
    fn batch_timer_records_every_request_of_a_batch() {
        let lat = Latency::default();
        let get = crate::commands::lookup(b"get").unwrap();
        let set = crate::commands::lookup(b"SET").unwrap();
        let mut t = BatchTimer::default();
        t.note(get); // outside a batch: ignored
        t.end(&lat); // nothing begun: nothing recorded
        t.begin();
        t.note(get);
        t.note(get);
        t.note(set);
        t.end(&lat);
        let mut totals = vec![HistTotals::default(); COMMANDS.len()];
        lat.add_into(&mut totals);
        let count = |s| {
            totals[command_index(s).unwrap()]
                .buckets
                .iter()
                .sum::<u64>()
        };
        assert_eq!(count(get), 2);
        assert_eq!(count(set), 1);
        assert_eq!(count(crate::commands::lookup(b"del").unwrap()), 0);
    }

    #[test]
    fn request_heads_parse_within_limits() {
        let h = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", 8)
            .unwrap()
            .unwrap();
        assert_eq!(h.method, "GET");
        assert_eq!(h.path, "/metrics?x=1");
        assert_eq!(parse_head(b"GET /metrics HTTP/1.1\r\nHo", 8), Ok(None));
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\n\r\n", 1),
            Err(ReadError::TooLarge)
        );
        assert_eq!(
            parse_head(b"\x00\x01garbage\r\n\r\n", 8),
            Err(ReadError::Malformed)
        );
        assert_eq!(
            parse_head(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 8),
            Err(ReadError::Malformed)
        );
    }

    #[test]
    fn config_ranges() {
        AdminConfig::default().validate().unwrap();
        let bad = AdminConfig {
            request_bytes_max: 10,
            ..AdminConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("request_bytes_max"));
        let bad = AdminConfig {
            timeout_ms: 0,
            ..AdminConfig::default()
        };
        assert!(bad.validate().is_err());
        assert_eq!(AdminConfig::default().addr(), None);
    }
}
