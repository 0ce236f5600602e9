//! `tessera stats`: per-node and per-core figures from `INFO`, per-map figures from `DM.STATS`,
//! as a table, as JSON, or refreshed like `top`.
//!
//! `INFO` is parsed generically (`# Section` headers, `key:value` lines), so the same code reads
//! Redis and Tessera. Per-core figures come from any `core<N>:k=v,k=v` line (Tessera's `shards`
//! section); several spellings of each figure are accepted so the table fills in from Redis's
//! names and Tessera's alike, and every raw field is kept in the JSON output. Ops/s is the
//! difference of the command counters of two samples divided by the time between them.

use super::conn::{args, Conn, ConnOpts};
use super::resp::Reply;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// One `INFO` reply, parsed: sections in order, each with its `key:value` fields in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Info {
    /// `(section name in lower case, fields)`.
    pub sections: Vec<(String, Vec<(String, String)>)>,
}

impl Info {
    /// Parses `INFO` text. Lines that are neither headers nor `key:value` are ignored.
    pub fn parse(text: &str) -> Info {
        let mut info = Info::default();
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('#') {
                info.sections
                    .push((name.trim().to_ascii_lowercase(), Vec::new()));
            } else if let Some((k, v)) = line.split_once(':') {
                if info.sections.is_empty() {
                    info.sections.push((String::new(), Vec::new()));
                }
                let fields = &mut info.sections.last_mut().expect("pushed above").1;
                fields.push((k.to_string(), v.to_string()));
            }
        }
        info
    }

    /// The first field named `key`, in any section.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.sections
            .iter()
            .flat_map(|(_, f)| f.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Per-core fields from `core<N>:k=v,...` lines, by core number.
    pub fn cores(&self) -> BTreeMap<u32, BTreeMap<String, String>> {
        self.fields()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix("core")?.parse().ok()?;
                Some((n, kv_list(v)?))
            })
            .collect()
    }

    /// Total keys over the keyspace's `db<N>:keys=...` lines, if any.
    pub fn keyspace_keys(&self) -> Option<u64> {
        let mut total = None;
        for (k, v) in self.fields() {
            let is_db = k
                .strip_prefix("db")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !is_db {
                continue;
            }
            if let Some(keys) = kv_list(v).and_then(|m| m.get("keys")?.parse::<u64>().ok()) {
                total = Some(total.unwrap_or(0) + keys);
            }
        }
        total
    }
}

/// Parses `k=v,k=v`; `None` unless every part has an `=`.
pub fn kv_list(v: &str) -> Option<BTreeMap<String, String>> {
    v.split(',')
        .map(|part| {
            part.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// The figures shown for a node or a core. `None` when the server does not report it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Keys stored.
    pub keys: Option<u64>,
    /// Memory used, bytes.
    pub memory_bytes: Option<u64>,
    /// Reads that found their key.
    pub hits: Option<u64>,
    /// Reads that did not.
    pub misses: Option<u64>,
    /// Keys evicted for memory.
    pub evicted: Option<u64>,
    /// Keys removed because their TTL passed.
    pub expired: Option<u64>,
    /// Commands per second between the two samples.
    pub ops_per_sec: Option<f64>,
    /// Client connections open.
    pub connections: Option<u64>,
    /// Memory allocated for storage (tables and index), bytes; at least `memory_bytes`' live
    /// part.
    pub allocated_bytes: Option<u64>,
    /// Bytes held by dead entry versions until compaction reclaims them.
    pub garbage_bytes: Option<u64>,
    /// Slot ranges owned, as the server writes them (opaque text).
    pub slots: Option<String>,
}

/// Accepted spellings, first match wins: Redis's `INFO` names first, then short ones.
const KEYS: &[&str] = &["keys", "db_keys", "key_count"];
const MEMORY: &[&str] = &[
    "used_memory",
    "memory_used",
    "used_bytes",
    "memory",
    "mem_used",
];
const HITS: &[&str] = &["keyspace_hits", "hits"];
const MISSES: &[&str] = &["keyspace_misses", "misses"];
const EVICTED: &[&str] = &["evicted_keys", "evicted", "evictions"];
const EXPIRED: &[&str] = &["expired_keys", "expired", "expirations"];
const COMMANDS: &[&str] = &[
    "total_commands_processed",
    "commands_processed",
    "commands",
    "ops",
];
const CONNECTIONS: &[&str] = &["connected_clients", "connections", "clients"];
const ALLOCATED: &[&str] = &[
    "allocated_bytes",
    "used_memory_allocated",
    "memory_allocated",
];
/// Parts that add up to the allocation when no total is reported (the engine's names).
const ALLOCATED_PARTS: &[&str] = &["table_bytes", "index_bytes"];
const GARBAGE: &[&str] = &["garbage_bytes", "used_memory_garbage", "garbage"];
const SLOTS: &[&str] = &["slots", "slot_ranges"];
const INSTANT_OPS: &[&str] = &["instantaneous_ops_per_sec", "ops_per_sec"];

/// Something figures can be read from: a whole `INFO` or one core's `k=v` fields.
trait Fields {
    fn field(&self, key: &str) -> Option<&str>;
}

impl Fields for Info {
    fn field(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

impl Fields for BTreeMap<String, String> {
    fn field(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

fn pick(f: &dyn Fields, names: &[&str]) -> Option<u64> {
    names.iter().find_map(|n| f.field(n)?.parse().ok())
}

fn figures(now: &dyn Fields, before: Option<&dyn Fields>, secs: f64) -> Figures {
    let ops_per_sec = match before {
        Some(before) if secs > 0.0 => match (pick(now, COMMANDS), pick(before, COMMANDS)) {
            // A counter that went down was reset (restart): no rate.
            (Some(n), Some(b)) if n >= b => Some((n - b) as f64 / secs),
            _ => None,
        },
        _ => INSTANT_OPS
            .iter()
            .find_map(|n| now.field(n)?.parse::<f64>().ok()),
    };
    Figures {
        keys: pick(now, KEYS),
        memory_bytes: pick(now, MEMORY),
        hits: pick(now, HITS),
        misses: pick(now, MISSES),
        evicted: pick(now, EVICTED),
        expired: pick(now, EXPIRED),
        ops_per_sec,
        connections: pick(now, CONNECTIONS),
        allocated_bytes: pick(now, ALLOCATED).or_else(|| {
            let parts: Vec<u64> = ALLOCATED_PARTS
                .iter()
                .filter_map(|n| now.field(n)?.parse().ok())
                .collect();
            (!parts.is_empty()).then(|| parts.iter().sum())
        }),
        garbage_bytes: pick(now, GARBAGE),
        slots: SLOTS.iter().find_map(|n| now.field(n)).map(str::to_string),
    }
}

/// One node's `INFO`, taken at a moment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// `host:port`.
    pub addr: String,
    /// When the reply arrived.
    pub at: Instant,
    /// The parsed reply.
    pub info: Info,
}

/// What is shown for one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStats {
    /// `host:port`.
    pub addr: String,
    /// Whole-node figures.
    pub node: Figures,
    /// Per-core figures and raw fields, by core number.
    pub cores: Vec<(u32, Figures, BTreeMap<String, String>)>,
}

/// Figures for a node from its latest sample and, for ops/s, an earlier one.
pub fn node_stats(now: &Sample, before: Option<&Sample>) -> NodeStats {
    let secs = before.map_or(0.0, |b| now.at.duration_since(b.at).as_secs_f64());
    let mut node = figures(&now.info, before.map(|b| &b.info as &dyn Fields), secs);
    let cores_before = before.map(|b| b.info.cores()).unwrap_or_default();
    let cores: Vec<_> = now
        .info
        .cores()
        .into_iter()
        .map(|(n, fields)| {
            let prev = cores_before.get(&n).map(|p| p as &dyn Fields);
            (n, figures(&fields, prev, secs), fields)
        })
        .collect();
    // A node's keys are its cores' keys when it reports cores (every map, Tessera), else the
    // keyspace section's `db<N>` lines (Redis; Tessera's db0 is only the default map).
    let core_keys: Vec<u64> = cores.iter().filter_map(|(_, f, _)| f.keys).collect();
    node.keys = node.keys.or_else(|| {
        if core_keys.is_empty() {
            now.info.keyspace_keys()
        } else {
            Some(core_keys.iter().sum())
        }
    });
    // Storage figures a node reports per core only are the sum of its cores.
    let total = |get: fn(&Figures) -> Option<u64>| {
        let v: Vec<u64> = cores.iter().filter_map(|(_, f, _)| get(f)).collect();
        (!v.is_empty()).then(|| v.iter().sum())
    };
    node.allocated_bytes = node
        .allocated_bytes
        .or_else(|| total(|f| f.allocated_bytes));
    node.garbage_bytes = node.garbage_bytes.or_else(|| total(|f| f.garbage_bytes));
    NodeStats {
        addr: now.addr.clone(),
        node,
        cores,
    }
}

/// Asks a node for `INFO` (all sections: `INFO everything` on Redis 7+, plain `INFO` elsewhere).
pub fn sample(conn: &mut Conn) -> anyhow::Result<Sample> {
    let reply = conn.call(&args(&["INFO", "everything"]))?;
    let reply = if reply.is_error() {
        conn.call(&args(&["INFO"]))?
    } else {
        reply
    };
    let text = match &reply {
        Reply::Error(e) => anyhow::bail!(
            "INFO failed at {}: {}",
            conn.addr(),
            String::from_utf8_lossy(e)
        ),
        other => other
            .as_text()
            .ok_or_else(|| anyhow::anyhow!("INFO at {} returned no text", conn.addr()))?,
    };
    Ok(Sample {
        addr: conn.addr().to_string(),
        at: Instant::now(),
        info: Info::parse(&text),
    })
}

fn figures_json(f: &Figures) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("keys".into(), json!(f.keys));
    m.insert("memory_bytes".into(), json!(f.memory_bytes));
    m.insert("hits".into(), json!(f.hits));
    m.insert("misses".into(), json!(f.misses));
    m.insert("evicted".into(), json!(f.evicted));
    m.insert("expired".into(), json!(f.expired));
    m.insert("ops_per_sec".into(), json!(f.ops_per_sec));
    m.insert("connections".into(), json!(f.connections));
    m.insert("allocated_bytes".into(), json!(f.allocated_bytes));
    m.insert("garbage_bytes".into(), json!(f.garbage_bytes));
    m.insert("slots".into(), json!(f.slots));
    m
}

/// The JSON document for one refresh: `{"nodes": [{"addr", figures..., "cores": [...]}]}`,
/// with `{"addr", "error"}` for a node that did not answer.
pub fn to_json(nodes: &[NodeStats], down: &[Down]) -> Value {
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|n| {
            let mut m = Map::new();
            m.insert("addr".into(), json!(n.addr));
            m.extend(figures_json(&n.node));
            let cores: Vec<Value> = n
                .cores
                .iter()
                .map(|(c, f, raw)| {
                    let mut cm = Map::new();
                    cm.insert("core".into(), json!(c));
                    cm.extend(figures_json(f));
                    cm.insert("fields".into(), json!(raw));
                    Value::Object(cm)
                })
                .collect();
            m.insert("cores".into(), Value::Array(cores));
            Value::Object(m)
        })
        .chain(
            down.iter()
                .map(|(addr, why)| json!({ "addr": addr, "error": why })),
        )
        .collect();
    json!({ "nodes": nodes })
}

fn cell_u(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |n| n.to_string())
}

/// `1536` -> `1.50K`, in binary units like `INFO`'s `used_memory_human`.
pub fn human_bytes(v: Option<u64>) -> String {
    let Some(b) = v else { return "-".into() };
    let units = ["B", "K", "M", "G", "T"];
    let mut x = b as f64;
    let mut i = 0;
    while x >= 1024.0 && i + 1 < units.len() {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{x:.2}{}", units[i])
    }
}

/// The table for one refresh: a line per node and, under it, a line per core. The ALLOC,
/// GARBAGE and SLOTS columns appear only when some line has them. Nodes that did not answer
/// follow the table, one `DOWN` line each.
pub fn to_table(nodes: &[NodeStats], down: &[Down]) -> String {
    let all: Vec<(String, &Figures)> = nodes
        .iter()
        .flat_map(|n| {
            std::iter::once((n.addr.clone(), &n.node))
                .chain(n.cores.iter().map(|(c, f, _)| (format!("  core{c}"), f)))
        })
        .collect();
    let any = |has: fn(&Figures) -> bool| all.iter().any(|(_, f)| has(f));
    let (alloc, garbage, slots) = (
        any(|f| f.allocated_bytes.is_some()),
        any(|f| f.garbage_bytes.is_some()),
        any(|f| f.slots.is_some()),
    );
    let mut header: Vec<String> = [
        "NODE/CORE",
        "KEYS",
        "MEMORY",
        "HITS",
        "MISSES",
        "EVICTED",
        "EXPIRED",
        "OPS/S",
        "CONNS",
    ]
    .map(String::from)
    .into();
    for (on, name) in [(alloc, "ALLOC"), (garbage, "GARBAGE"), (slots, "SLOTS")] {
        if on {
            header.push(name.into());
        }
    }
    let mut rows = vec![header];
    for (name, f) in all {
        let mut r = vec![
            name,
            cell_u(f.keys),
            human_bytes(f.memory_bytes),
            cell_u(f.hits),
            cell_u(f.misses),
            cell_u(f.evicted),
            cell_u(f.expired),
            f.ops_per_sec
                .map_or_else(|| "-".into(), |o| format!("{o:.0}")),
            cell_u(f.connections),
        ];
        if alloc {
            r.push(human_bytes(f.allocated_bytes));
        }
        if garbage {
            r.push(human_bytes(f.garbage_bytes));
        }
        if slots {
            r.push(f.slots.clone().unwrap_or_else(|| "-".into()));
        }
        rows.push(r);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        for (i, cell) in r.iter().enumerate() {
            if i == 0 {
                let _ = write!(out, "{cell:<w$}", w = widths[i]);
            } else {
                let _ = write!(out, "  {cell:>w$}", w = widths[i]);
            }
        }
        out.push('\n');
    }
    for (addr, why) in down {
        let _ = writeln!(out, "{addr}  DOWN  {why}");
    }
    out
}

/// A `DM.STATS` reply as JSON: maps and flat `[k, v, k, v]` arrays become objects.
pub fn reply_json(reply: &Reply) -> Value {
    match reply {
        Reply::Nil => Value::Null,
        Reply::Integer(n) => json!(n),
        Reply::Boolean(b) => json!(b),
        Reply::Double(d) => d.parse::<f64>().map_or_else(|_| json!(d), |x| json!(x)),
        Reply::Map(pairs) | Reply::Attribute { attrs: pairs, .. } => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (key_text(k), reply_json(v)))
                .collect(),
        ),
        Reply::Array(items) | Reply::Set(items) | Reply::Push(items) => {
            let flat_pairs = items.len() % 2 == 0
                && !items.is_empty()
                && items
                    .iter()
                    .step_by(2)
                    .all(|k| matches!(k, Reply::Simple(_) | Reply::Bulk(_)));
            if flat_pairs {
                Value::Object(
                    items
                        .chunks(2)
                        .map(|p| (key_text(&p[0]), reply_json(&p[1])))
                        .collect(),
                )
            } else {
                Value::Array(items.iter().map(reply_json).collect())
            }
        }
        other => {
            let text = other.as_text().unwrap_or_default();
            text.parse::<i64>()
                .map_or_else(|_| json!(text), |n| json!(n))
        }
    }
}

fn key_text(r: &Reply) -> String {
    r.as_text().unwrap_or_else(|| format!("{r:?}"))
}

/// `tessera stats` options.
#[derive(Debug, Clone)]
pub struct StatsOpts {
    /// The nodes to ask.
    pub nodes: Vec<ConnOpts>,
    /// Show this map's `DM.STATS` instead of `INFO` figures; empty: every map's.
    pub dmap: Option<String>,
    /// Print JSON (one document per refresh, one per line) instead of a table.
    pub json: bool,
    /// Refresh every this long, like `top`; `None` prints once.
    pub watch: Option<Duration>,
    /// Refreshes before exiting in watch mode; `None` runs until interrupted.
    pub iterations: Option<u64>,
    /// Time between the two samples of the first refresh (for ops/s).
    pub interval: Duration,
    /// Clear the screen between refreshes (stdout is a terminal and not JSON).
    pub clear: bool,
}

/// One node being watched: where it is, its connection while it answers, and its last
/// sample (the baseline for ops/s).
struct Watched {
    opts: ConnOpts,
    conn: Option<Conn>,
    before: Option<Sample>,
}

impl Watched {
    /// Samples the node, (re)connecting if needed; a failure drops the connection so the next
    /// refresh tries afresh.
    fn sample(&mut self) -> Result<Sample, String> {
        let result = (|| {
            if self.conn.is_none() {
                self.conn = Some(Conn::connect(&self.opts)?);
            }
            sample(self.conn.as_mut().expect("connected above"))
        })();
        result.map_err(|e| {
            self.conn = None;
            self.before = None;
            format!("{e:#}")
        })
    }
}

/// A node that did not answer a refresh: `(addr, why)`.
pub type Down = (String, String);

/// Runs `tessera stats`, writing to `out`. Printing once, an unreachable node is an error; in
/// watch mode it is shown as down and tried again at the next refresh, like `top` would.
pub fn run(opts: &StatsOpts, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let refreshes = match (opts.watch, opts.iterations) {
        (None, _) => Some(1),
        (Some(_), n) => n,
    };
    let mut nodes: Vec<Watched> = opts
        .nodes
        .iter()
        .map(|o| Watched {
            opts: o.clone(),
            conn: None,
            before: None,
        })
        .collect();
    let mut done = 0u64;
    while refreshes.map_or(true, |r| done < r) {
        if done > 0 {
            std::thread::sleep(opts.watch.unwrap_or_default());
        }
        let text = if let Some(map) = &opts.dmap {
            let mut conns = Vec::new();
            for n in &nodes {
                conns.push(Conn::connect(&n.opts)?);
            }
            dmap_stats(&mut conns, map, opts.json)?
        } else {
            let (up, down) = refresh(&mut nodes, opts.interval);
            // The reason names the node already.
            if let (Some((_, why)), None) = (down.first(), opts.watch) {
                anyhow::bail!("{why}");
            }
            if opts.json {
                format!("{}\n", to_json(&up, &down))
            } else {
                to_table(&up, &down)
            }
        };
        if opts.clear {
            out.write_all(b"\x1b[H\x1b[2J")?;
        } else if done > 0 && !opts.json {
            out.write_all(b"\n")?;
        }
        if let (Some(every), false) = (opts.watch, opts.json) {
            writeln!(
                out,
                "tessera stats: refresh {} every {:.1}s\n",
                done + 1,
                every.as_secs_f64()
            )?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        done += 1;
    }
    Ok(())
}

/// One refresh: nodes without a baseline are sampled twice, `interval` apart; the others once
/// against their last sample.
fn refresh(nodes: &mut [Watched], interval: Duration) -> (Vec<NodeStats>, Vec<Down>) {
    let mut down = Vec::new();
    let mut waited_for_baseline = false;
    for n in nodes.iter_mut().filter(|n| n.before.is_none()) {
        match n.sample() {
            Ok(s) => {
                n.before = Some(s);
                waited_for_baseline = true;
            }
            Err(why) => down.push((n.opts.addr(), why)),
        }
    }
    if waited_for_baseline {
        std::thread::sleep(interval);
    }
    let mut up = Vec::new();
    for n in nodes.iter_mut() {
        if down.iter().any(|(a, _)| *a == n.opts.addr()) {
            continue;
        }
        match n.sample() {
            Ok(now) => {
                up.push(node_stats(&now, n.before.as_ref()));
                n.before = Some(now);
            }
            Err(why) => down.push((n.opts.addr(), why)),
        }
    }
    (up, down)
}

/// `DM.STATS map` (or, for an empty `map`, `DM.STATS` for every map) on each node.
fn dmap_stats(conns: &mut [Conn], map: &str, as_json: bool) -> anyhow::Result<String> {
    let mut docs = Vec::new();
    for c in conns.iter_mut() {
        let command = if map.is_empty() {
            args(&["DM.STATS"])
        } else {
            args(&["DM.STATS", map])
        };
        let reply = c.call(&command)?;
        if let Reply::Error(e) = &reply {
            anyhow::bail!(
                "DM.STATS {map} failed at {}: {}",
                c.addr(),
                String::from_utf8_lossy(e)
            );
        }
        docs.push((c.addr().to_string(), reply_json(&reply)));
    }
    if as_json {
        let name = (!map.is_empty()).then_some(map);
        let nodes: Vec<Value> = docs
            .into_iter()
            .map(|(addr, stats)| json!({ "addr": addr, "stats": stats }))
            .collect();
        return Ok(format!("{}\n", json!({ "dmap": name, "nodes": nodes })));
    }
    if map.is_empty() {
        return Ok(maps_table(&docs));
    }
    let mut out = String::new();
    for (addr, stats) in docs {
        let _ = writeln!(out, "{addr}  dmap {map}");
        match stats {
            Value::Object(m) => {
                let w = m.keys().map(String::len).max().unwrap_or(0);
                for (k, v) in m {
                    let _ = writeln!(out, "  {k:<w$}  {v}");
                }
            }
            other => {
                let _ = writeln!(out, "  {other}");
            }
        }
    }
    Ok(out)
}

/// Every map of every node as one table: a row per (node, map), a column per figure.
pub fn maps_table(docs: &[(String, Value)]) -> String {
    let mut fields: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (addr, maps) in docs {
        let Value::Object(maps) = maps else { continue };
        for (name, stats) in maps {
            let Value::Object(stats) = stats else {
                continue;
            };
            for k in stats.keys() {
                if !fields.contains(k) {
                    fields.push(k.clone());
                }
            }
            let mut row = vec![addr.clone(), name.clone()];
            row.extend(fields.iter().map(|f| {
                stats
                    .get(f)
                    .map_or_else(|| "-".to_string(), ToString::to_string)
            }));
            rows.push(row);
        }
    }
    let mut header = vec!["NODE".to_string(), "DMAP".to_string()];
    header.extend(fields.iter().map(|f| f.to_ascii_uppercase()));
    let width = header.len();
    let mut all = vec![header];
    all.extend(rows.into_iter().map(|mut r| {
        // A map seen before a later map added fields has no value for them.
        r.resize(width, "-".into());
        r
    }));
    let widths: Vec<usize> = (0..width)
        .map(|i| all.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &all {
        for (i, cell) in r.iter().enumerate() {
            if i < 2 {
                let _ = write!(out, "{cell:<w$}  ", w = widths[i]);
            } else {
                let _ = write!(out, "{cell:>w$}  ", w = widths[i]);
            }
        }
        let trimmed = out.trim_end_matches(' ').len();
        out.truncate(trimmed);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_map_in_one_table() {
        let docs = vec![
            (
                "n1:1".to_string(),
                json!({"big": {"length": 10, "hits": 2}, "users": {"length": 2, "hits": 0}}),
            ),
            (
                "n2:1".to_string(),
                json!({"users": {"length": 1, "misses": 4}}),
            ),
        ];
        let t = maps_table(&docs);
        let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            ["NODE", "DMAP", "HITS", "LENGTH", "MISSES"],
            "{t}"
        );
        assert_eq!(lines[1], ["n1:1", "big", "2", "10", "-"], "{t}");
        assert_eq!(lines[2], ["n1:1", "users", "0", "2", "-"], "{t}");
        assert_eq!(lines[3], ["n2:1", "users", "-", "1", "4"], "{t}");
    }

    /// A Redis 7 `INFO` excerpt (the real names), plus a `shards` section in the
    /// `core<N>:k=v,...` form Tessera adds: core0 with the names tesserad prints today, core1
    /// with the other accepted spellings.
    const INFO_TEXT: &str = "# Server\r\nredis_version:7.0.15\r\n\r\n# Clients\r\n\
        connected_clients:3\r\n\r\n# Memory\r\nused_memory:2048\r\n\r\n# Stats\r\n\
        total_commands_processed:100\r\ninstantaneous_ops_per_sec:7\r\nkeyspace_hits:5\r\n\
        keyspace_misses:2\r\nevicted_keys:1\r\nexpired_keys:4\r\n\r\n# Keyspace\r\n\
        db0:keys=10,expires=1,avg_ttl=0\r\ndb1:keys=6,expires=0,avg_ttl=0\r\n\r\n# Shards\r\n\
        core0:keys=7,default_map_keys=5,used_memory=1000,hits=3,misses=1,evicted_keys=0,expired_keys=2,commands=60,connections=2\r\n\
        core1:keys=8,memory=1048,hits=2,misses=1,evictions=1,expirations=2,ops=40,clients=1\r\n";

    fn sample_at(text: &str, at: Instant) -> Sample {
        Sample {
            addr: "n1:6379".into(),
            at,
            info: Info::parse(text),
        }
    }

    #[test]
    fn parses_sections_and_fields() {
        let info = Info::parse(INFO_TEXT);
        let names: Vec<&str> = info.sections.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["server", "clients", "memory", "stats", "keyspace", "shards"]
        );
        assert_eq!(info.get("redis_version"), Some("7.0.15"));
        assert_eq!(info.get("used_memory"), Some("2048"));
        assert_eq!(info.keyspace_keys(), Some(16));
        let cores = info.cores();
        assert_eq!(cores.len(), 2);
        assert_eq!(cores[&1]["memory"], "1048");
    }

    #[test]
    fn kv_lists_need_every_part() {
        assert_eq!(kv_list("a=1,b=2").unwrap()["b"], "2");
        assert_eq!(kv_list("a=1,b"), None);
        assert_eq!(kv_list("7.0.15"), None);
    }

    #[test]
    fn figures_for_node_and_cores_with_rates() {
        let t0 = Instant::now();
        let before = sample_at(INFO_TEXT, t0);
        let later = INFO_TEXT
            .replace(
                "total_commands_processed:100",
                "total_commands_processed:300",
            )
            .replace("commands=60", "commands=160")
            .replace("ops=40", "ops=30");
        let now = sample_at(&later, t0 + Duration::from_secs(2));
        let s = node_stats(&now, Some(&before));
        assert_eq!(
            s.node,
            Figures {
                keys: Some(15),
                memory_bytes: Some(2048),
                hits: Some(5),
                misses: Some(2),
                evicted: Some(1),
                expired: Some(4),
                ops_per_sec: Some(100.0),
                connections: Some(3),
                allocated_bytes: None,
                garbage_bytes: None,
                slots: None,
            }
        );
        assert_eq!(s.cores.len(), 2);
        let (c0, f0, _) = &s.cores[0];
        assert_eq!(*c0, 0);
        assert_eq!(f0.ops_per_sec, Some(50.0));
        assert_eq!(f0.memory_bytes, Some(1000));
        assert_eq!(f0.connections, Some(2));
        let (_, f1, raw1) = &s.cores[1];
        assert_eq!(
            (
                f1.keys,
                f1.memory_bytes,
                f1.evicted,
                f1.expired,
                f1.connections
            ),
            (Some(8), Some(1048), Some(1), Some(2), Some(1))
        );
        // The counter went down (a restart): no rate rather than a wrong one.
        assert_eq!(f1.ops_per_sec, None);
        assert_eq!(raw1["ops"], "30");
    }

    #[test]
    fn one_sample_uses_the_servers_instant_rate() {
        let s = node_stats(&sample_at(INFO_TEXT, Instant::now()), None);
        assert_eq!(s.node.ops_per_sec, Some(7.0));
    }

    #[test]
    fn node_keys_are_the_cores_keys_else_the_keyspace() {
        let text = "# Keyspace\r\ndb0:keys=1\r\n# Shards\r\ncore0:keys=2\r\ncore1:keys=3\r\n";
        let s = node_stats(&sample_at(text, Instant::now()), None);
        assert_eq!(s.node.keys, Some(5));
        assert_eq!(s.node.memory_bytes, None);
        let redis = "# Keyspace\r\ndb0:keys=1,expires=0\r\ndb2:keys=4,expires=0\r\n";
        let s = node_stats(&sample_at(redis, Instant::now()), None);
        assert_eq!(s.node.keys, Some(5));
        assert_eq!(
            node_stats(&sample_at("", Instant::now()), None).node.keys,
            None
        );
    }

    #[test]
    fn json_and_table_show_every_figure() {
        let s = node_stats(&sample_at(INFO_TEXT, Instant::now()), None);
        let j = to_json(std::slice::from_ref(&s), &[]);
        assert_eq!(j["nodes"][0]["addr"], "n1:6379");
        assert_eq!(j["nodes"][0]["keys"], 15);
        assert_eq!(j["nodes"][0]["cores"][1]["core"], 1);
        assert_eq!(j["nodes"][0]["cores"][1]["fields"]["memory"], "1048");
        assert_eq!(j["nodes"][0]["cores"][0]["hits"], 3);
        let down = [("n2:1".to_string(), "connection refused".to_string())];
        let j = to_json(std::slice::from_ref(&s), &down);
        assert_eq!(
            j["nodes"][1],
            json!({"addr": "n2:1", "error": "connection refused"})
        );
        let t = to_table(&[s], &down);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert_eq!(lines[4], "n2:1  DOWN  connection refused");
        assert!(lines[0].starts_with("NODE/CORE"));
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            ["n1:6379", "15", "2.00K", "5", "2", "1", "4", "7", "3"]
        );
        let cells: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(cells, ["core1", "8", "1.02K", "2", "1", "1", "2", "-", "1"]);
    }

    #[test]
    fn storage_figures_and_slots_when_reported() {
        let text = "# Shards\r\n\
            core0:keys=1,used_memory=100,table_bytes=4096,index_bytes=1024,garbage_bytes=10,slots=0-8191\r\n\
            core1:keys=2,used_memory=200,allocated_bytes=2048,garbage_bytes=30,slots=8192-16383\r\n";
        let s = node_stats(&sample_at(text, Instant::now()), None);
        assert_eq!(s.cores[0].1.allocated_bytes, Some(5120));
        assert_eq!(s.cores[1].1.allocated_bytes, Some(2048));
        assert_eq!(s.cores[1].1.slots.as_deref(), Some("8192-16383"));
        assert_eq!(s.node.allocated_bytes, Some(7168));
        assert_eq!(s.node.garbage_bytes, Some(40));
        assert_eq!(s.node.slots, None);
        let t = to_table(std::slice::from_ref(&s), &[]);
        let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            &lines[0][8..],
            ["CONNS", "ALLOC", "GARBAGE", "SLOTS"],
            "{t}"
        );
        assert_eq!(&lines[1][9..], ["7.00K", "40B", "-"], "{t}");
        assert_eq!(&lines[2][9..], ["5.00K", "10B", "0-8191"], "{t}");
        let j = to_json(&[s], &[]);
        assert_eq!(j["nodes"][0]["garbage_bytes"], 40);
        assert_eq!(j["nodes"][0]["cores"][1]["slots"], "8192-16383");
        // Without them, the columns stay away.
        let plain = node_stats(&sample_at(INFO_TEXT, Instant::now()), None);
        assert!(!to_table(&[plain], &[]).contains("GARBAGE"));
    }

    #[test]
    fn human_bytes_in_binary_units() {
        assert_eq!(human_bytes(None), "-");
        assert_eq!(human_bytes(Some(512)), "512B");
        assert_eq!(human_bytes(Some(1536)), "1.50K");
        assert_eq!(human_bytes(Some(3 * 1024 * 1024)), "3.00M");
    }

    #[test]
    fn dmap_stats_replies_become_objects() {
        let b = |s: &str| Reply::Bulk(s.as_bytes().to_vec());
        let resp3 = Reply::Map(vec![
            (b("length"), Reply::Integer(3)),
            (b("hits"), Reply::Integer(9)),
        ]);
        assert_eq!(reply_json(&resp3), json!({"length": 3, "hits": 9}));
        let resp2 = Reply::Array(vec![b("length"), Reply::Integer(3), b("memory"), b("4096")]);
        assert_eq!(reply_json(&resp2), json!({"length": 3, "memory": 4096}));
        assert_eq!(
            reply_json(&Reply::Array(vec![
                Reply::Integer(1),
                Reply::Double("2.5".into())
            ])),
            json!([1, 2.5])
        );
    }
}
