//! Configuration of a node: one struct per crate composed into one TOML document.
//!
//! Owns [`NetConfig`] (listener, authentication, connection limits, background work) and the
//! composition [`NodeConfig`] = `[engine]` + `[net]` + `[runtime]` + `[protocol]` +
//! `[cluster]`. Every table
//! rejects unknown keys (`deny_unknown_fields`), every limit is a documented field, and
//! [`NodeConfig::validate`] runs at start-up. Size values in the file accept `100mb`/`1gb`
//! forms through [`parse_bytes`] where the field says so (flags use it too).

use std::net::IpAddr;

use serde::Deserialize;
use thiserror::Error;

use crate::resp::Limits;
use crate::runtime::{RuntimeConfig, RuntimeConfigError};
use tessera_engine::{ConfigError as EngineConfigError, EngineConfig};

/// The `[net]` table: listener, clients and background work of every core.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    /// Address to listen on. Default `127.0.0.1`.
    pub bind: IpAddr,
    /// TCP port. 0 = any free port (tests). Default 6379.
    pub port: u16,
    /// Whether to listen at all (an embedded node may run without a port). Default true.
    pub listen: bool,
    /// Password required by `AUTH`/`HELLO AUTH` (Redis's `requirepass`). Empty = no
    /// authentication. Default empty.
    pub requirepass: String,
    /// Most client connections per node; further connections get
    /// `-ERR max number of clients reached` and are closed. Default 10000.
    pub connections_max: usize,
    /// Most requests taken from one read of a connection before they are executed and answered
    /// (the rest wait in the buffer). Bounds the memory one read can pin. Default 1024.
    pub pipeline_depth_max: usize,
    /// Bytes asked for per socket read. Default 16 KiB, 512..=16 MiB.
    pub read_bytes: usize,
    /// Pub/sub messages queued for one subscriber before it is disconnected (client output
    /// buffer limit for pub/sub). Default 4096.
    pub pubsub_pending_max: usize,
    /// Reply bytes of one read of a normal client that may pile up before they are written out
    /// mid-batch. Default 1 MiB.
    pub reply_flush_bytes: usize,
    /// Commands slower than this (microseconds) enter the slow log (`slowlog-log-slower-than`).
    /// Default 10000.
    pub slowlog_slower_than_us: u64,
    /// Entries kept in each core's slow log (`slowlog-max-len`). Default 128.
    pub slowlog_len_max: usize,
    /// Interval of each core's background tick (active expiry, compaction), milliseconds.
    /// Default 25: small, frequent slices, because requests that arrive during a tick wait for
    /// it (measured in docs/benchmarks.md: 100 ms ticks of 4x the work doubled p99).
    pub background_tick_ms: u64,
    /// Keys sampled by active expiry per tick per core. Default 50 (2000 per second).
    pub expire_budget_keys: usize,
    /// Bytes of entries (live or dead) compaction may walk per tick per core, so at most that
    /// many moved. Default 64 KiB (2.5 MiB/s).
    pub compact_budget_bytes: usize,
    /// On shutdown, how long in-flight requests may take before connections are dropped,
    /// milliseconds. Default 5000.
    pub shutdown_grace_ms: u64,
    /// On shutdown, a connection keeps reading and answering requests its client had already
    /// sent; it closes once nothing arrives for this long (milliseconds, within the grace).
    /// Default 20.
    pub shutdown_quiet_ms: u64,
    /// Most commands one connection may queue between MULTI and EXEC; one more is an error
    /// that discards the transaction (EXECABORT). Default 65536.
    pub multi_commands_max: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 6379,
            listen: true,
            requirepass: String::new(),
            connections_max: 10_000,
            pipeline_depth_max: 1024,
            read_bytes: 16 * 1024,
            pubsub_pending_max: 4096,
            reply_flush_bytes: 1024 * 1024,
            slowlog_slower_than_us: 10_000,
            slowlog_len_max: 128,
            background_tick_ms: 25,
            expire_budget_keys: 50,
            compact_budget_bytes: 64 * 1024,
            shutdown_grace_ms: 5000,
            shutdown_quiet_ms: 20,
            multi_commands_max: 65536,
        }
    }
}

/// The whole configuration of a node (the TOML file's top level).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// `[engine]`: storage of each shard (memory budget, eviction, key/value limits).
    pub engine: EngineConfig,
    /// `[net]`: listener, clients, background work.
    pub net: NetConfig,
    /// `[runtime]`: executors and the cross-core mesh.
    pub runtime: RuntimeConfig,
    /// `[protocol]`: RESP request limits.
    pub protocol: Limits,
    /// `[admin]`: the HTTP port for `/metrics` and `/health` (off by default).
    pub admin: crate::admin::AdminConfig,
    /// `[cluster]`: cluster mode, identity, seeds, secret, timing.
    pub cluster: crate::cluster::config::ClusterConfig,
}

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot parse config: {0}")]
    Toml(#[from] toml::de::Error),
    #[error(transparent)]
    Engine(#[from] EngineConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeConfigError),
    #[error("config field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl NodeConfig {
    /// Parses a TOML document; unknown keys are errors naming the key.
    pub fn from_toml(text: &str) -> Result<NodeConfig, ConfigError> {
        Ok(toml::from_str(text)?)
    }

    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.engine.validate()?;
        self.runtime.validate()?;
        self.net.validate()?;
        self.admin.validate()?;
        self.cluster.validate()?;
        if self.cluster.enabled
            && self.cluster.cluster_port != 0
            && self.cluster.cluster_port == self.net.port
        {
            return Err(ConfigError::Invalid {
                field: "cluster.cluster_port",
                reason: "must differ from net.port (peers never use the client port)".into(),
            });
        }
        let p = &self.protocol;
        if p.bulk_bytes_max == 0 || p.multibulk_len_max == 0 || p.inline_bytes_max < 16 {
            return Err(ConfigError::Invalid {
                field: "protocol",
                reason: "bulk_bytes_max and multibulk_len_max must be > 0, inline_bytes_max >= 16"
                    .into(),
            });
        }
        Ok(())
    }
}

impl NetConfig {
    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.connections_max == 0 {
            return bad("net.connections_max", "must be at least 1");
        }
        if self.pipeline_depth_max == 0 {
            return bad("net.pipeline_depth_max", "must be at least 1");
        }
        if !(512..=16 << 20).contains(&self.read_bytes) {
            return bad("net.read_bytes", "must be in 512..=16777216");
        }
        if self.pubsub_pending_max == 0 {
            return bad("net.pubsub_pending_max", "must be at least 1");
        }
        if self.reply_flush_bytes < 4096 {
            return bad("net.reply_flush_bytes", "must be at least 4096");
        }
        if self.background_tick_ms == 0 || self.background_tick_ms > 60_000 {
            return bad("net.background_tick_ms", "must be in 1..=60000");
        }
        if self.multi_commands_max == 0 {
            return bad("net.multi_commands_max", "must be at least 1");
        }
        if self.shutdown_quiet_ms > 10_000 {
            return bad("net.shutdown_quiet_ms", "must be in 0..=10000");
        }
        if self.requirepass.contains(['\r', '\n']) {
            return bad("net.requirepass", "must not contain CR or LF");
        }
        Ok(())
    }
}

/// Parses a byte size the way Redis does: a number with an optional unit `b`, `k`/`kb`,
/// `m`/`mb`, `g`/`gb` (case-insensitive; `k` = 1000, `kb` = 1024 like redis.conf).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("100mb"), Some(100 * 1024 * 1024));
        assert_eq!(parse_bytes("1GB"), Some(1 << 30));
        assert_eq!(parse_bytes("12345"), Some(12345));
        assert_eq!(parse_bytes("1k"), Some(1000));
        assert_eq!(parse_bytes("1x"), None);
        assert_eq!(parse_bytes("mb"), None);
        assert_eq!(parse_bytes("99999999999999999999gb"), None);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = NodeConfig::from_toml("[net]\nprot = 1\n").unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
        let err = NodeConfig::from_toml("colour = 1\n").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn defaults_validate_and_partial_tables_merge() {
        NodeConfig::default().validate().unwrap();
        let c = NodeConfig::from_toml("[net]\nport = 7000\n").unwrap();
        assert_eq!(c.net.port, 7000);
        assert_eq!(c.net.pipeline_depth_max, 1024);
        let c = NodeConfig::from_toml("[net]\nread_bytes = 1\n").unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn example_config_parses_and_validates() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/example.toml");
        let text = std::fs::read_to_string(path).expect("config/example.toml exists");
        let c = NodeConfig::from_toml(&text).expect("example parses");
        c.validate().expect("example validates");
    }
}
