//! INFO and CONFIG GET/SET: node-wide views assembled from every core's counters.
//!
//! Counters live in each core (plain cells) and are only read through `Op::Stats` messages,
//! so nothing here shares mutable state between cores.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tessera_engine::{glob::glob_match, CommandError, EvictionPolicy, Reply};

use crate::config::parse_bytes;
use crate::core::{Core, Op};

/// One core's counters, by name, from its `Op::Stats` reply.
pub type CoreCounters = Vec<(String, u64)>;

/// Collects `Op::Stats` from every core.
pub async fn all_stats(core: &Core) -> Vec<CoreCounters> {
    let mut v = Vec::new();
    for c in 0..core.shared.cores {
        let r = core.call(c, vec![Op::Stats]).await.pop();
        let mut counters = Vec::new();
        if let Some(Reply::Map(pairs)) = r {
            for (k, val) in pairs {
                if let (Reply::Simple(k), Reply::Int(n)) = (k, val) {
                    counters.push((String::from_utf8_lossy(&k).into_owned(), n as u64));
                }
            }
        }
        v.push(counters);
    }
    v
}

fn get(c: &CoreCounters, name: &str) -> u64 {
    c.iter().find(|(k, _)| k == name).map_or(0, |(_, v)| *v)
}

fn sum(all: &[CoreCounters], name: &str) -> u64 {
    all.iter().map(|c| get(c, name)).sum()
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}G", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.2}M", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else {
        format!("{bytes}B")
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "cluster",
    "keyspace",
    "shards",
];

/// The INFO text for `sections` (empty, `default`, `all` or `everything` = every section).
pub async fn info(core: &Core, sections: &[String]) -> String {
    let all = all_stats(core).await;
    let shared = &core.shared;
    let want = |s: &str| {
        sections.is_empty()
            || sections
                .iter()
                .any(|x| x == s || x == "all" || x == "everything" || x == "default")
    };
    let mut o = String::new();
    for &section in SECTIONS {
        if !want(section) {
            continue;
        }
        if !o.is_empty() {
            o.push_str("\r\n");
        }
        let _ = write!(o, "# {}\r\n", capitalize(section));
        match section {
            "server" => {
                let up = shared.started.elapsed().as_secs();
                let _ = write!(
                    o,
                    "redis_version:7.2.0\r\ntessera_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nmultiplexing_api:io_uring\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nexecutors:{}\r\n",
                    env!("CARGO_PKG_VERSION"),
                    std::env::consts::OS,
                    std::env::consts::ARCH,
                    std::process::id(),
                    shared.config.net.port,
                    up,
                    up / 86400,
                    shared.cores,
                );
            }
            "clients" => {
                let _ = write!(
                    o,
                    "connected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\npubsub_clients:{}\r\n",
                    shared.clients.load(Ordering::Relaxed),
                    shared.config.net.connections_max,
                    sum(&all, "pubsub_channels"),
                );
            }
            "memory" => {
                let used = sum(&all, "used_memory");
                let max = shared.maxmemory.load(Ordering::Relaxed);
                let policy = shared.policy.lock().map_or("noeviction", |p| p.name());
                let rss = rss_bytes();
                let _ = write!(
                    o,
                    "used_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nmaxmemory:{max}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{policy}\r\n",
                    human(used),
                    human(rss),
                    human(max),
                );
            }
            "persistence" => {
                o.push_str("loading:0\r\nrdb_changes_since_last_save:0\r\nrdb_bgsave_in_progress:0\r\naof_enabled:0\r\naof_rewrite_in_progress:0\r\n");
            }
            "stats" => {
                let _ = write!(
                    o,
                    "total_connections_received:{}\r\ntotal_commands_processed:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\ncross_core_batches:{}\r\n",
                    sum(&all, "connections_total"),
                    sum(&all, "commands"),
                    sum(&all, "net_in_bytes"),
                    sum(&all, "net_out_bytes"),
                    sum(&all, "rejected_connections"),
                    sum(&all, "expired_keys"),
                    sum(&all, "evicted_keys"),
                    sum(&all, "hits"),
                    sum(&all, "misses"),
                    sum(&all, "batches_out"),
                );
            }
            "replication" => o.push_str("role:master\r\nconnected_slaves:0\r\n"),
            "cpu" => {
                let (u, s) = cpu_times();
                let _ = write!(o, "used_cpu_sys:{s:.6}\r\nused_cpu_user:{u:.6}\r\n");
            }
            "cluster" => {
                let on = u8::from(core.cluster.borrow().enabled);
                let _ = write!(o, "cluster_enabled:{on}\r\n");
            }
            "keyspace" => {
                let keys = sum(&all, "default_map_keys");
                if keys > 0 {
                    let _ = write!(
                        o,
                        "db0:keys={keys},expires={},avg_ttl=0\r\n",
                        sum(&all, "keys_with_ttl")
                    );
                }
            }
            "shards" => {
                for (i, c) in all.iter().enumerate() {
                    let _ = write!(o, "core{i}:");
                    let fields: Vec<String> = c
                        .iter()
                        .filter(|(k, _)| k != "core")
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    o.push_str(&fields.join(","));
                    o.push_str("\r\n");
                }
            }
            _ => {}
        }
    }
    o
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// Process CPU time (user, system) in seconds, from /proc/self/stat.
fn cpu_times() -> (f64, f64) {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the `(comm)`; utime and stime are the 14th and 15th fields overall.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = 100.0;
    let u = f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    let st = f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    (u, st)
}

/// The parameters CONFIG GET answers, with their current values.
fn parameters(core: &Core) -> Vec<(&'static str, String)> {
    let shared = &core.shared;
    let net = &shared.config.net;
    vec![
        (
            "maxmemory",
            shared.maxmemory.load(Ordering::Relaxed).to_string(),
        ),
        (
            "maxmemory-policy",
            shared
                .policy
                .lock()
                .map_or("noeviction", |p| p.name())
                .to_owned(),
        ),
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("databases", "1".into()),
        ("port", net.port.to_string()),
        ("bind", net.bind.to_string()),
        ("maxclients", net.connections_max.to_string()),
        ("timeout", "0".into()),
        (
            "slowlog-log-slower-than",
            net.slowlog_slower_than_us.to_string(),
        ),
        ("slowlog-max-len", net.slowlog_len_max.to_string()),
        (
            "proto-max-bulk-len",
            shared.config.protocol.bulk_bytes_max.to_string(),
        ),
        ("cluster-enabled", "no".into()),
        ("io-threads", shared.cores.to_string()),
    ]
}

/// CONFIG GET | SET | RESETSTAT | REWRITE.
pub async fn config(core: &Core, sub: &str, args: &[Bytes]) -> Reply {
    match sub {
        "get" if args.len() >= 3 => {
            let params = parameters(core);
            let mut pairs = Vec::new();
            for pat in &args[2..] {
                let pat = pat.to_ascii_lowercase();
                for (k, v) in &params {
                    if glob_match(&pat, k.as_bytes()) && !pairs.iter().any(|(n, _)| n == k) {
                        pairs.push((*k, v.clone()));
                    }
                }
            }
            Reply::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            Reply::Bulk(Bytes::from_static(k.as_bytes())),
                            Reply::Bulk(Bytes::from(v)),
                        )
                    })
                    .collect(),
            )
        }
        "set" if args.len() >= 4 && args.len() % 2 == 0 => {
            // Validate everything first, then apply (Redis applies CONFIG SET atomically).
            let mut memory = None;
            let mut policy = None;
            for pair in args[2..].chunks(2) {
                let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
                let value = String::from_utf8_lossy(&pair[1]).into_owned();
                match name.as_str() {
                    "maxmemory" => match parse_bytes(&value) {
                        Some(b) => memory = Some(b),
                        None => {
                            return Reply::Error(CommandError::Other(
                                "CONFIG SET failed (possibly related to argument 'maxmemory') - argument couldn't be parsed into an integer".into()
                            ))
                        }
                    },
                    "maxmemory-policy" => match EvictionPolicy::parse(&value.to_ascii_lowercase()) {
                        Some(p) => policy = Some(p),
                        None => {
                            return Reply::Error(CommandError::Other(
                                "CONFIG SET failed (possibly related to argument 'maxmemory-policy') - argument(s) must be one of the following: noeviction, allkeys-lru, volatile-lru, allkeys-lfu, volatile-ttl".into(),
                            ))
                        }
                    },
                    "save" | "appendonly" if value.is_empty() || value == "no" => {}
                    _ => {
                        return Reply::Error(CommandError::Other(format!(
                            "Unknown option or number of arguments for CONFIG SET - '{name}'"
                        )))
                    }
                }
            }
            let cores = core.shared.cores;
            if let Some(total) = memory {
                core.shared.maxmemory.store(total, Ordering::Relaxed);
                for c in 0..cores {
                    core.call(c, vec![Op::SetMaxmemory(shard_share(total, cores))])
                        .await;
                }
            }
            if let Some(p) = policy {
                if let Ok(mut g) = core.shared.policy.lock() {
                    *g = p;
                }
                for c in 0..cores {
                    core.call(c, vec![Op::SetPolicy(p)]).await;
                }
            }
            Reply::Ok
        }
        "resetstat" | "rewrite" if args.len() == 2 => Reply::Ok,
        _ => Reply::Error(CommandError::Other(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(args.get(1).map_or(&b""[..], |b| b))
        ))),
    }
}

/// Each shard's part of a node-wide memory budget (0 stays unlimited).
pub fn shard_share(total: u64, cores: usize) -> u64 {
    if total == 0 {
        0
    } else {
        total.div_ceil(cores as u64).max(1)
    }
}
