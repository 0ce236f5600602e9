//! The `[cluster]` table: cluster mode, identity, ports, seeds, secret, quorum, routing, and the
//! timing of membership, table distribution and peer links. Every field documents its default
//! and range; [`ClusterConfig::validate`] checks them at start-up.

use std::net::{SocketAddr, ToSocketAddrs};

use serde::Deserialize;
use tessera_cluster::{MembershipConfig, NodeId, WireConfig};

use crate::config::ConfigError;

/// How a request for a slot another node owns is answered.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// `-MOVED slot host:port`: the client follows (Redis Cluster clients, `redis-cli -c`).
    #[default]
    Redirect,
    /// Forward over the peer link and relay the reply (for clients that do not speak cluster).
    Proxy,
}

/// The `[cluster]` table.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Run as a cluster member (gossip, peer links, redirects). Default false: a single node
    /// that still answers the `CLUSTER` commands as a one-node cluster.
    pub enabled: bool,
    /// This node's id, 40 hex digits. Empty: read from `node_id_file`, or a random one.
    /// Default empty.
    pub node_id: String,
    /// File holding the node id: read when it exists, created with a random id when it does
    /// not, so a restarted node keeps its id. Empty: no file (a new random id per start).
    /// Default empty.
    pub node_id_file: String,
    /// Port of the peer links (TCP) and of gossip (UDP, same number), on `net.bind`. Never the
    /// client port. 0 = any free port (tests). Default 16379.
    pub cluster_port: u16,
    /// The host this node tells clients (`-MOVED`, `CLUSTER SLOTS`) and peers. Must be an IP
    /// address (gossip identities carry socket addresses). Empty: `net.bind`, or 127.0.0.1
    /// when that is the unspecified address. Default empty.
    pub announce_host: String,
    /// Gossip addresses (`host:cluster_port`) of seed nodes. This node's own address may be
    /// listed (it is ignored). Default empty (start alone; others may join through us).
    pub seeds: Vec<String>,
    /// The cluster secret: peer links authenticate with it (HMAC challenge/response) and every
    /// gossip datagram carries a tag keyed with it. Required in cluster mode. Default empty.
    pub secret: String,
    /// Below this many live members (self included) the node answers writes with
    /// `-CLUSTERDOWN` and its coordinator does not plan. Default 1, at least 1.
    pub member_count_quorum: usize,
    /// `redirect` (default): `-MOVED`; `proxy`: forward to the owner and relay its reply.
    pub routing: Routing,
    /// Proxy routing: how long a forwarded request waits for the owner's reply before the
    /// client gets `-TRYAGAIN`, milliseconds; also how long a cluster-wide command (PUBLISH,
    /// FLUSHALL, DM.DESTROY, DM.SCAN on another member) waits for each member. Default 5000,
    /// 1..=600000.
    pub proxy_timeout_ms: u64,
    /// SWIM probe period, milliseconds. Default 1000, at least 10.
    pub probe_period_ms: u64,
    /// Time to wait for a probe answer, milliseconds; less than `probe_period_ms`.
    /// Default 500.
    pub probe_rtt_ms: u64,
    /// Suspect-to-down delay, milliseconds. A dead node is declared down after about
    /// `probe_period_ms + suspect_to_down_ms`. Default 4000, at least 1. Also the coordinator
    /// lease (`KeeperConfig::lease_ms`): the coordinator plans only while every member echoed
    /// one of its epoch hints within this long, so it must be at least three
    /// `epoch_hint_interval_ms`.
    pub suspect_to_down_ms: u64,
    /// Interval of announcements to seeds that are not live members, milliseconds.
    /// Default 1000, at least 10.
    pub seed_retry_ms: u64,
    /// Interval of announcements to members declared down, milliseconds (a member cut off
    /// and declared down hears it and rejoins). Default 5000, at least 10.
    pub down_announce_ms: u64,
    /// Largest gossip datagram in bytes. Default 1400, at least 512, at most 65000.
    pub gossip_packet_bytes: usize,
    /// A node without a table waits this long after its start before planning the first one,
    /// so the membership views converge first, milliseconds. Default 3000, at most 600000.
    pub first_plan_delay_ms: u64,
    /// A member that owns slots and leaves the live view (declared down) keeps its slots in
    /// the coordinator's plans this long before they are reassigned to live members without
    /// their data, milliseconds: a node that only failed its probes for a while (a loaded
    /// machine) and comes back loses nothing; a dead node's slots stay unavailable this much
    /// longer. Default 10000, at most 600000 (0: reassign at once).
    pub member_down_grace_ms: u64,
    /// Interval at which the coordinator re-plans (and commits finished migrations),
    /// milliseconds. Default 300, 10..=60000.
    pub replan_interval_ms: u64,
    /// Interval of the epoch hints (`TableEpoch`) to every member, milliseconds.
    /// Default 500, 10..=60000.
    pub epoch_hint_interval_ms: u64,
    /// Timeout of a peer-link connect, milliseconds. Default 1000, 1..=60000.
    pub link_connect_timeout_ms: u64,
    /// Time a new peer link has to authenticate before it is closed, milliseconds.
    /// Default 5000, 1..=60000 (2000 timed out now and then on a loaded 2-core machine; a
    /// timed-out dial fails the proxied requests queued for it with `-TRYAGAIN` and restarts
    /// the migrations with that peer, so a spurious timeout still costs).
    pub link_handshake_timeout_ms: u64,
    /// Wait before re-dialling a peer whose link failed, milliseconds. Messages for it are
    /// held meanwhile (within `link_queue_frames`) and sent first on the new link.
    /// Default 500, 1..=60000.
    pub link_retry_ms: u64,
    /// Frames queued for one peer: on its outgoing link while it is up or being dialled, or
    /// held while it waits to be re-dialled. A frame that finds the queue full fails at once
    /// to its sender (a proxied request answers `-TRYAGAIN`, a migration sees the link lost);
    /// an up link is then closed (both sides restart the migrations that used it). Also the
    /// bound of each core's relay queue (stream frames for a core whose mailbox is full,
    /// kept in order); a frame that finds it full closes the link to its sender the same way.
    /// Default 65536, 16..=1048576.
    pub link_queue_frames: usize,
    /// Most peer links accepted at once (authenticated or not); more are closed at once.
    /// Default 256, at least 1.
    pub peer_links_max: usize,
    /// Largest peer frame body in bytes. Default 16 MiB, 4096..=4294967279.
    pub frame_bytes_max: usize,
    /// Migration: entries per stream batch (one frame, one yield point). Default 256, >= 1.
    pub migration_batch_ops_max: usize,
    /// Migration: approximate key+value bytes per batch. Default 256 KiB, >= 1, well under
    /// `frame_bytes_max`.
    pub migration_batch_bytes_max: usize,
    /// Migration: entries sent and not yet acknowledged before a source waits. Default 4096,
    /// >= `migration_batch_ops_max`.
    pub migration_window_ops_max: u64,
    /// Migration: writes teed into a stream and not yet sent before writes to that slot get
    /// `-TRYAGAIN`. Default 65536, >= 1.
    pub migration_tee_ops_max: usize,
    /// Migration timer of every core (next batches, handoffs, commit requests), milliseconds.
    /// Default 5, 1..=1000.
    pub migration_tick_ms: u64,
    /// Migration timer of a core with no migration (nothing streams in or out of it),
    /// milliseconds: a table, stream message or link loss that starts one wakes the core's
    /// migration task at once, so this tick is only a safety net. Keeps idle cluster nodes from
    /// waking 1000 / `migration_tick_ms` times a second for nothing (each wake-up costs CPU,
    /// and co-located nodes share it). Default 100, `migration_tick_ms..=60000`.
    pub migration_idle_tick_ms: u64,
    /// Migration: entries the sources of one core put into stream messages per executor turn,
    /// all migrating slots together (a handoff counts the entries its digest reads; a turn
    /// may go over by one batch); the core yields to requests between turns. Bounds the
    /// stall a join causes: with thousands of small slots moving at once, one turn used to
    /// stream them all. Default 512, >= 1.
    pub migration_turn_ops_max: usize,
    /// Migration: keys removed per executor turn from slots that left this core (after their
    /// commit); the rest goes in later turns. Default 1024, >= 1.
    pub migration_drop_keys_max: usize,
    /// Migration: the share of a core's time, in percent, that its migration calls (the
    /// timer's turns and the stream messages it handles) may take while its sources have more
    /// to send: after a turn the timer waits until the calls since the previous turn are
    /// within it (at most `migration_pause_max_ms`). Time is wall-clock time, so where the
    /// core is descheduled in a call (a busy shared CPU) the pause grows and the migration
    /// backs off. A core that streams without pausing never
    /// sleeps, and where CPUs are shared the kernel then runs it as a CPU hog, behind every
    /// other runnable task, with requests waiting meanwhile. Lower: a join disturbs requests
    /// less and takes longer. 100 = no pause (turns back to back, yielding to I/O between).
    /// Default 25, 1..=100.
    pub migration_duty_percent: u64,
    /// Migration: the longest pause between two turns (`migration_duty_percent`),
    /// milliseconds: bounds how long one slow call (the core descheduled in it) holds the
    /// streams back, and so also how far the migration backs off on a busy shared CPU
    /// (higher: requests wait less there, the migration takes longer). Default 5,
    /// 1..=10000.
    pub migration_pause_max_ms: u64,
    /// Migration: `migration_duty_percent` for the cores of a node that is leaving
    /// (`CLUSTER LEAVE`, SIGTERM). A draining node serves fewer slots with every commit and
    /// must get out fast; its turns are paced by this share instead (100 = no pause). The
    /// nodes that receive its slots keep their own pacing. Default 100, 1..=100.
    pub migration_leave_duty_percent: u64,
    /// `tesserad` on SIGTERM/SIGINT in cluster mode: how long to wait for this node's slots to
    /// migrate away before stopping anyway, milliseconds (0 = stop at once, losing the slots'
    /// data). Default 120000.
    pub leave_timeout_ms: u64,
    /// A drained node (every slot migrated away) exits once every live member has hinted that
    /// it holds the last table, or after this long, milliseconds: a leaving coordinator's last
    /// commit table may otherwise exist only on the exiting node, and the members would send
    /// clients to it until a successor plans again (one lease later). Default 5000,
    /// 0..=600000 (0: exit at once).
    pub leave_confirm_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            node_id: String::new(),
            node_id_file: String::new(),
            cluster_port: 16379,
            announce_host: String::new(),
            seeds: Vec::new(),
            secret: String::new(),
            member_count_quorum: 1,
            routing: Routing::Redirect,
            proxy_timeout_ms: 5000,
            probe_period_ms: 1000,
            probe_rtt_ms: 500,
            suspect_to_down_ms: 4000,
            seed_retry_ms: 1000,
            down_announce_ms: 5000,
            gossip_packet_bytes: 1400,
            first_plan_delay_ms: 3000,
            member_down_grace_ms: 10_000,
            replan_interval_ms: 300,
            epoch_hint_interval_ms: 500,
            link_connect_timeout_ms: 1000,
            link_handshake_timeout_ms: 5000,
            link_retry_ms: 500,
            link_queue_frames: 65536,
            peer_links_max: 256,
            frame_bytes_max: tessera_cluster::wire::FRAME_BYTES_MAX_DEFAULT,
            migration_batch_ops_max: 256,
            migration_batch_bytes_max: 256 << 10,
            migration_window_ops_max: 4096,
            migration_tee_ops_max: 65536,
            migration_tick_ms: 5,
            migration_idle_tick_ms: 100,
            migration_turn_ops_max: 512,
            migration_drop_keys_max: 1024,
            migration_duty_percent: 25,
            migration_pause_max_ms: 5,
            migration_leave_duty_percent: 100,
            leave_timeout_ms: 120_000,
            leave_confirm_ms: 5000,
        }
    }
}

fn bad(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl ClusterConfig {
    /// Checks every field against its documented range. Seeds are checked for form only
    /// (resolving names happens at start).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.node_id.is_empty() {
            self.node_id
                .parse::<NodeId>()
                .map_err(|e| bad("cluster.node_id", e.to_string()))?;
        }
        if !self.announce_host.is_empty() && self.announce_host.parse::<std::net::IpAddr>().is_err()
        {
            return Err(bad("cluster.announce_host", "must be an IP address"));
        }
        for s in &self.seeds {
            if s.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .map_or(true, |p| p == 0)
            {
                return Err(bad("cluster.seeds", format!("{s:?} is not host:port")));
            }
        }
        if self.enabled && self.secret.is_empty() {
            return Err(bad(
                "cluster.secret",
                "a cluster secret is required in cluster mode",
            ));
        }
        if self.secret.len() > 1024 {
            return Err(bad("cluster.secret", "at most 1024 bytes"));
        }
        let range = |field: &'static str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(bad(field, format!("must be in {lo}..={hi} (got {v})")))
            }
        };
        range(
            "cluster.proxy_timeout_ms",
            self.proxy_timeout_ms,
            1,
            600_000,
        )?;
        range(
            "cluster.first_plan_delay_ms",
            self.first_plan_delay_ms,
            0,
            600_000,
        )?;
        range(
            "cluster.member_down_grace_ms",
            self.member_down_grace_ms,
            0,
            600_000,
        )?;
        range(
            "cluster.replan_interval_ms",
            self.replan_interval_ms,
            10,
            60_000,
        )?;
        range(
            "cluster.epoch_hint_interval_ms",
            self.epoch_hint_interval_ms,
            10,
            60_000,
        )?;
        if self.suspect_to_down_ms < self.epoch_hint_interval_ms.saturating_mul(3) {
            return Err(bad(
                "cluster.suspect_to_down_ms",
                format!(
                    "must be at least 3 x epoch_hint_interval_ms ({}): it is also the coordinator lease",
                    self.epoch_hint_interval_ms
                ),
            ));
        }
        range(
            "cluster.link_connect_timeout_ms",
            self.link_connect_timeout_ms,
            1,
            60_000,
        )?;
        range(
            "cluster.link_handshake_timeout_ms",
            self.link_handshake_timeout_ms,
            1,
            60_000,
        )?;
        range("cluster.link_retry_ms", self.link_retry_ms, 1, 60_000)?;
        range(
            "cluster.link_queue_frames",
            self.link_queue_frames as u64,
            16,
            1 << 20,
        )?;
        range(
            "cluster.peer_links_max",
            self.peer_links_max as u64,
            1,
            u64::MAX,
        )?;
        range(
            "cluster.gossip_packet_bytes",
            self.gossip_packet_bytes as u64,
            512,
            65_000,
        )?;
        range("cluster.migration_tick_ms", self.migration_tick_ms, 1, 1000)?;
        range(
            "cluster.migration_idle_tick_ms",
            self.migration_idle_tick_ms,
            self.migration_tick_ms,
            60_000,
        )?;
        range(
            "cluster.migration_duty_percent",
            self.migration_duty_percent,
            1,
            100,
        )?;
        range(
            "cluster.migration_leave_duty_percent",
            self.migration_leave_duty_percent,
            1,
            100,
        )?;
        range(
            "cluster.leave_confirm_ms",
            self.leave_confirm_ms,
            0,
            600_000,
        )?;
        range(
            "cluster.migration_pause_max_ms",
            self.migration_pause_max_ms,
            1,
            10_000,
        )?;
        self.wire()
            .validate()
            .map_err(|e| bad("cluster.frame_bytes_max", e.to_string()))?;
        if self.migration_batch_bytes_max >= self.frame_bytes_max / 2 {
            return Err(bad(
                "cluster.migration_batch_bytes_max",
                "must be under half of frame_bytes_max",
            ));
        }
        self.migration()
            .validate()
            .map_err(|e| bad("cluster.migration_*", e.to_string()))?;
        self.membership(Vec::new()).validate().map_err(|_| {
            bad(
                "cluster",
                "membership timing: member_count_quorum >= 1, probe_period_ms >= 10, \
                     0 < probe_rtt_ms < probe_period_ms, suspect_to_down_ms >= 1, \
                     seed_retry_ms >= 10, down_announce_ms >= 10",
            )
        })?;
        Ok(())
    }

    /// The membership settings for these seeds.
    pub fn membership(&self, seeds: Vec<SocketAddr>) -> MembershipConfig {
        MembershipConfig {
            seeds,
            seed_retry_ms: self.seed_retry_ms,
            member_count_quorum: self.member_count_quorum,
            probe_period_ms: self.probe_period_ms,
            probe_rtt_ms: self.probe_rtt_ms,
            suspect_to_down_ms: self.suspect_to_down_ms,
            down_announce_ms: self.down_announce_ms,
            max_packet_bytes: self.gossip_packet_bytes,
            secret: self.secret.as_bytes().to_vec(),
        }
    }

    /// The migration settings.
    pub fn migration(&self) -> tessera_cluster::MigrationConfig {
        tessera_cluster::MigrationConfig {
            batch_ops_max: self.migration_batch_ops_max,
            batch_bytes_max: self.migration_batch_bytes_max,
            window_ops_max: self.migration_window_ops_max,
            tee_ops_max: self.migration_tee_ops_max,
            turn_ops_max: self.migration_turn_ops_max,
            drop_keys_max: self.migration_drop_keys_max,
            ..tessera_cluster::MigrationConfig::default()
        }
    }

    /// The frame codec limits.
    pub fn wire(&self) -> WireConfig {
        WireConfig {
            frame_bytes_max: self.frame_bytes_max,
        }
    }

    /// Resolves the seeds to socket addresses (names through the system resolver).
    pub fn resolve_seeds(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut out = Vec::new();
        for s in &self.seeds {
            let addr = s
                .to_socket_addrs()
                .map_err(|e| bad("cluster.seeds", format!("{s:?}: {e}")))?
                .find(SocketAddr::is_ipv4)
                .ok_or_else(|| bad("cluster.seeds", format!("{s:?} has no IPv4 address")))?;
            out.push(addr);
        }
        Ok(out)
    }

    /// This start's node id: `node_id`, else the one in `node_id_file` (created with a random
    /// id when missing), else a random one.
    pub fn load_node_id(&self) -> Result<NodeId, ConfigError> {
        if !self.node_id.is_empty() {
            return self
                .node_id
                .parse()
                .map_err(|e: tessera_cluster::NodeIdError| bad("cluster.node_id", e.to_string()));
        }
        if self.node_id_file.is_empty() {
            return Ok(super::random_node_id());
        }
        match std::fs::read_to_string(&self.node_id_file) {
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|e: tessera_cluster::NodeIdError| {
                    bad(
                        "cluster.node_id_file",
                        format!("{}: {e}", self.node_id_file),
                    )
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = super::random_node_id();
                std::fs::write(&self.node_id_file, format!("{id}\n")).map_err(|e| {
                    bad(
                        "cluster.node_id_file",
                        format!("cannot write {}: {e}", self.node_id_file),
                    )
                })?;
                Ok(id)
            }
            Err(e) => Err(bad(
                "cluster.node_id_file",
                format!("cannot read {}: {e}", self.node_id_file),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_cluster_mode_needs_a_secret() {
        ClusterConfig::default().validate().unwrap();
        let on = ClusterConfig {
            enabled: true,
            ..ClusterConfig::default()
        };
        assert!(on.validate().unwrap_err().to_string().contains("secret"));
        let on = ClusterConfig {
            secret: "s".into(),
            ..on
        };
        on.validate().unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: Vec<(ClusterConfig, &str)> = vec![
            (
                ClusterConfig {
                    node_id: "xyz".into(),
                    ..ClusterConfig::default()
                },
                "cluster.node_id",
            ),
            (
                ClusterConfig {
                    seeds: vec!["nohost".into()],
                    ..ClusterConfig::default()
                },
                "cluster.seeds",
            ),
            (
                ClusterConfig {
                    announce_host: "example.org".into(),
                    ..ClusterConfig::default()
                },
                "cluster.announce_host",
            ),
            (
                ClusterConfig {
                    proxy_timeout_ms: 0,
                    ..ClusterConfig::default()
                },
                "cluster.proxy_timeout_ms",
            ),
            (
                ClusterConfig {
                    probe_rtt_ms: 5000,
                    ..ClusterConfig::default()
                },
                "membership timing",
            ),
            (
                ClusterConfig {
                    frame_bytes_max: 10,
                    ..ClusterConfig::default()
                },
                "cluster.frame_bytes_max",
            ),
            (
                ClusterConfig {
                    migration_duty_percent: 0,
                    ..ClusterConfig::default()
                },
                "cluster.migration_duty_percent",
            ),
            (
                ClusterConfig {
                    migration_duty_percent: 101,
                    ..ClusterConfig::default()
                },
                "cluster.migration_duty_percent",
            ),
            (
                ClusterConfig {
                    migration_pause_max_ms: 0,
                    ..ClusterConfig::default()
                },
                "cluster.migration_pause_max_ms",
            ),
        ];
        for (cfg, field) in cases {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e} should name {field}");
        }
    }

    #[test]
    fn node_id_file_is_created_then_reused() {
        let path = std::env::temp_dir().join(format!("tessera-node-id-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let cfg = ClusterConfig {
            node_id_file: path.to_string_lossy().into_owned(),
            ..ClusterConfig::default()
        };
        let first = cfg.load_node_id().unwrap();
        assert_eq!(cfg.load_node_id().unwrap(), first);
        std::fs::write(&path, "garbage").unwrap();
        assert!(cfg.load_node_id().is_err());
        let _ = std::fs::remove_file(&path);
        let seeds = ClusterConfig {
            seeds: vec!["127.0.0.1:24001".into()],
            ..ClusterConfig::default()
        };
        assert_eq!(
            seeds.resolve_seeds().unwrap(),
            vec!["127.0.0.1:24001".parse::<SocketAddr>().unwrap()]
        );
    }
}
