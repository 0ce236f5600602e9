//! Membership: SWIM through the `foca` crate behind our own [`Membership`] trait.
//!
//! Sans-I/O like foca itself: the driver hands in received datagrams and the current time
//! (milliseconds of its monotonic clock), calls [`Membership::tick`] at
//! [`Membership::next_wake_ms`], and carries out what [`MembershipOutput`] asks (send these
//! datagrams, report these events). Added on top of foca: seeds announced to until they answer
//! and again periodically while not a member (so nodes that started alone merge: Olric #121),
//! a node generation (bumped by the caller on restart, used as the node's age), and
//! `member_count_quorum`.
//!
//! The foca identity carries a node's addresses and core count, so every member learns the
//! [`NodeInfo`] of every other one from gossip. Its `Addr` is the gossip socket address: a seed
//! is announced to as a placeholder identity with only that address known.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use bytes::Bytes;
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use hmac::{Hmac, Mac};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use sha2::Sha256;

use crate::node::{NodeId, NodeInfo};

/// A member's gossip identity (what foca exchanges).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct GossipId {
    /// UDP address of the member's gossip socket: foca's `Addr`.
    pub addr: SocketAddr,
    /// Node id (all zero in a seed placeholder).
    pub node: NodeId,
    /// Generation: higher wins an address conflict (a restarted node replaces its old self).
    pub generation: u64,
    /// RESP port.
    pub client_port: u16,
    /// Peer-link TCP port.
    pub peer_port: u16,
    /// Cores.
    pub cores: u16,
}

impl foca::Identity for GossipId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        // Declared down while alive (a partition): rejoin as a new generation of ourselves.
        Some(GossipId {
            generation: self.generation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, self.node) > (adversary.generation, adversary.node)
    }
}

impl GossipId {
    /// The identity of the node described by `info`.
    pub fn from_info(info: &NodeInfo) -> Result<GossipId, MembershipError> {
        let ip = info
            .host
            .parse()
            .map_err(|_| MembershipError::Host(info.host.clone()))?;
        Ok(GossipId {
            addr: SocketAddr::new(ip, info.gossip_port),
            node: info.id,
            generation: info.generation,
            client_port: info.client_port,
            peer_port: info.peer_port,
            cores: info.cores,
        })
    }

    /// The node this identity describes.
    pub fn to_info(&self) -> NodeInfo {
        NodeInfo {
            id: self.node,
            host: self.addr.ip().to_string(),
            client_port: self.client_port,
            peer_port: self.peer_port,
            gossip_port: self.addr.port(),
            cores: self.cores,
            generation: self.generation,
        }
    }

    fn seed(addr: SocketAddr) -> GossipId {
        GossipId {
            addr,
            node: NodeId::default(),
            generation: 0,
            client_port: 0,
            peer_port: 0,
            cores: 0,
        }
    }
}

/// Membership settings. Every duration is in milliseconds of the driver's monotonic clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// Gossip addresses of seed nodes (`--seeds`). May include this node's own (ignored).
    pub seeds: Vec<SocketAddr>,
    /// Interval between announcements to seeds that are not live members. Default 1000, >= 10.
    pub seed_retry_ms: u64,
    /// Below this many live members (self included) the node refuses writes with
    /// `-CLUSTERDOWN` and the coordinator does not plan. Default 1, >= 1.
    pub member_count_quorum: usize,
    /// SWIM probe period. Default 1000, >= 10.
    pub probe_period_ms: u64,
    /// Time to wait for a probe answer; less than `probe_period_ms`. Default 500.
    pub probe_rtt_ms: u64,
    /// Suspect-to-down delay; the failure-detection bound is about
    /// `probe_period_ms + suspect_to_down_ms`. Default 4000.
    pub suspect_to_down_ms: u64,
    /// Down members are sent an announce this often, so a member that was declared down while
    /// it was cut off (and that no live member talks to any more) hears about it, renews its
    /// generation and rejoins. Default 5000, >= 10. (foca's `periodic_announce_to_down_members`;
    /// without it a healed node can stay alone for good: the simulator found it.)
    pub down_announce_ms: u64,
    /// Largest gossip datagram in bytes, tag included. Default 1400 (fits an Ethernet MTU),
    /// >= 512.
    pub max_packet_bytes: usize,
    /// The cluster secret. Every datagram carries a 16-byte HMAC-SHA256 tag over its bytes
    /// keyed with it; datagrams without a valid tag are dropped before SWIM sees them, so a
    /// host without the secret cannot inject members. Empty means untagged datagrams (tests,
    /// trusted single-host setups only).
    pub secret: Vec<u8>,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            seeds: Vec::new(),
            seed_retry_ms: 1000,
            member_count_quorum: 1,
            probe_period_ms: 1000,
            probe_rtt_ms: 500,
            suspect_to_down_ms: 4000,
            max_packet_bytes: 1400,
            down_announce_ms: 5000,
            secret: Vec::new(),
        }
    }
}

/// Bytes of the tag appended to every gossip datagram when a secret is set.
pub const GOSSIP_TAG_BYTES: usize = 16;

impl MembershipConfig {
    /// Checks the documented constraints.
    pub fn validate(&self) -> Result<(), MembershipError> {
        let ok = self.seed_retry_ms >= 10
            && self.member_count_quorum >= 1
            && self.probe_period_ms >= 10
            && self.probe_rtt_ms > 0
            && self.probe_rtt_ms < self.probe_period_ms
            && self.suspect_to_down_ms > 0
            && self.max_packet_bytes >= 512
            && self.down_announce_ms >= 10;
        if ok {
            Ok(())
        } else {
            Err(MembershipError::Config)
        }
    }
}

/// Membership failures. None of them changes the member list; a bad datagram is dropped.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// A `MembershipConfig` constraint is violated.
    #[error("invalid membership config")]
    Config,
    /// The node's host is not an IP address (gossip identities carry socket addresses).
    #[error("host {0:?} is not an IP address")]
    Host(String),
    /// foca refused a datagram or an operation (malformed, too big, from ourselves).
    #[error("swim: {0}")]
    Swim(#[from] foca::Error),
    /// A datagram's tag is missing or wrong (no cluster secret, or corrupted): dropped.
    #[error("gossip datagram failed authentication")]
    BadTag,
}

/// A change the driver (and the table keeper) must hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A member became live.
    Up(NodeInfo),
    /// A member was declared down.
    Down(NodeInfo),
    /// This node is known by at least one live member.
    Joined,
    /// No other member is live.
    Alone,
    /// This node was declared down and rejoined as a new generation.
    Rejoined(NodeInfo),
}

/// What the driver must carry out after a call.
#[derive(Debug, Default)]
pub struct MembershipOutput {
    /// Datagrams to send from the gossip socket.
    pub datagrams: Vec<(SocketAddr, Bytes)>,
    /// Events, in order.
    pub events: Vec<MembershipEvent>,
}

/// The membership interface the rest of Tessera sees (foca stays swappable behind it).
pub trait Membership {
    /// This node.
    fn me(&self) -> NodeInfo;
    /// Starts joining: announces to every seed. Call once after creation.
    fn start(&mut self, now_ms: u64, out: &mut MembershipOutput);
    /// A datagram arrived on the gossip socket. Bad datagrams are dropped with an error.
    fn handle_datagram(
        &mut self,
        now_ms: u64,
        data: &[u8],
        out: &mut MembershipOutput,
    ) -> Result<(), MembershipError>;
    /// Runs due timers and seed retries. Call at [`Membership::next_wake_ms`] (or later).
    fn tick(&mut self, now_ms: u64, out: &mut MembershipOutput);
    /// When `tick` next has work to do.
    fn next_wake_ms(&self) -> Option<u64>;
    /// Tells the cluster this node leaves (after its slots migrated away).
    fn leave(&mut self, now_ms: u64, out: &mut MembershipOutput);
    /// Live members, this node included, sorted by id.
    fn live_members(&self) -> Vec<NodeInfo>;
    /// Whether the live member count reaches `member_count_quorum`.
    fn has_quorum(&self) -> bool;
    /// The coordinator this node sees: the oldest live member.
    fn coordinator(&self) -> NodeId {
        coordinator(&self.live_members()).expect("self is always live")
    }
}

/// The oldest member: lowest generation (generations are start times), ties to the lower id.
pub fn coordinator(members: &[NodeInfo]) -> Option<NodeId> {
    members
        .iter()
        .min_by_key(|n| (n.generation, n.id))
        .map(|n| n.id)
}

type FocaImpl = Foca<GossipId, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// [`Membership`] implemented with foca's SWIM.
pub struct SwimMembership {
    foca: FocaImpl,
    rt: AccumulatingRuntime<GossipId>,
    cfg: MembershipConfig,
    timers: BTreeMap<(u64, u64), Timer<GossipId>>,
    timer_seq: u64,
    next_seed_ms: u64,
    mac: Option<Hmac<Sha256>>,
    /// foca reported us connected to the cluster (`Active`) and not since alone (`Idle`) or
    /// rejoined under a renewed identity (`Rejoin`). While false, `announce_seeds` also
    /// announces to every seed and every known member (see there).
    joined: bool,
    /// `leave` was called: no more announcements.
    left: bool,
}

impl std::fmt::Debug for SwimMembership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwimMembership")
            .field("me", &self.foca.identity())
            .field("members", &self.foca.num_members())
            .finish_non_exhaustive()
    }
}

impl SwimMembership {
    /// Membership for node `me` (its `generation` already bumped for this start), with an RNG
    /// seed (from the OS in production, fixed in simulations).
    pub fn new(
        me: &NodeInfo,
        cfg: MembershipConfig,
        rng_seed: u64,
    ) -> Result<SwimMembership, MembershipError> {
        cfg.validate()?;
        let cfg_secret = cfg.secret.clone();
        let id = GossipId::from_info(me)?;
        let mut fc = foca::Config::new_lan(NonZeroU32::new(16).expect("nonzero"));
        fc.probe_period = Duration::from_millis(cfg.probe_period_ms);
        fc.probe_rtt = Duration::from_millis(cfg.probe_rtt_ms);
        fc.suspect_to_down_after = Duration::from_millis(cfg.suspect_to_down_ms);
        fc.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(cfg.down_announce_ms),
            num_members: NonZeroUsize::new(2).expect("nonzero"),
        });
        let tag = if cfg.secret.is_empty() {
            0
        } else {
            GOSSIP_TAG_BYTES
        };
        fc.max_packet_size =
            NonZeroUsize::new(cfg.max_packet_bytes - tag).ok_or(MembershipError::Config)?;
        let foca = Foca::new(id, fc, SmallRng::seed_from_u64(rng_seed), PostcardCodec);
        Ok(SwimMembership {
            foca,
            rt: AccumulatingRuntime::new(),
            cfg,
            timers: BTreeMap::new(),
            timer_seq: 0,
            next_seed_ms: 0,
            joined: false,
            left: false,
            mac: (!cfg_secret.is_empty())
                .then(|| Hmac::<Sha256>::new_from_slice(&cfg_secret).expect("any key length")),
        })
    }

    /// Moves what foca accumulated into `out` and the timer queue.
    fn drain(&mut self, now_ms: u64, out: &mut MembershipOutput) {
        while let Some((to, data)) = self.rt.to_send() {
            let data = match &self.mac {
                Some(mac) => {
                    let mut m = mac.clone();
                    m.update(&data);
                    let tag = m.finalize().into_bytes();
                    let mut tagged = Vec::with_capacity(data.len() + GOSSIP_TAG_BYTES);
                    tagged.extend_from_slice(&data);
                    tagged.extend_from_slice(&tag[..GOSSIP_TAG_BYTES]);
                    Bytes::from(tagged)
                }
                None => data,
            };
            out.datagrams.push((to.addr, data));
        }
        while let Some((after, timer)) = self.rt.to_schedule() {
            self.timer_seq += 1;
            let at = now_ms.saturating_add(after.as_millis() as u64);
            self.timers.insert((at, self.timer_seq), timer);
        }
        while let Some(n) = self.rt.to_notify() {
            let ev = match n {
                OwnedNotification::MemberUp(id) => MembershipEvent::Up(id.to_info()),
                OwnedNotification::MemberDown(id) => MembershipEvent::Down(id.to_info()),
                OwnedNotification::Rename(old, new) => {
                    tracing::debug!(old = ?old.node, new = ?new.node, "member renamed");
                    continue;
                }
                OwnedNotification::Active => {
                    self.joined = true;
                    MembershipEvent::Joined
                }
                OwnedNotification::Idle => {
                    self.joined = false;
                    MembershipEvent::Alone
                }
                OwnedNotification::Rejoin(id) => {
                    // Disconnected until an update reaches us: announce at the next tick.
                    self.joined = false;
                    self.next_seed_ms = now_ms;
                    MembershipEvent::Rejoined(id.to_info())
                }
                OwnedNotification::Defunct => {
                    // Cannot happen: `GossipId::renew` always renews, so foca rejoins instead.
                    tracing::warn!("membership went defunct");
                    continue;
                }
                #[allow(unreachable_patterns)]
                _ => continue,
            };
            out.events.push(ev);
        }
    }

    /// Announces to the seeds that are not live members; while not joined (`joined`), to every
    /// seed and every known member. foca renews our identity when it hears we were declared
    /// down and is then disconnected until an update reaches it, and it accepts only messages
    /// addressed to its current identity (or announcements to its address): when every member
    /// renewed at once, each one's gossip went to the others' old identities and was dropped,
    /// and membership fell silent for good (simulator seed 1116 at 20 s, 2026-12-01). An
    /// announcement is accepted by address and answered with the member list, which connects.
    fn announce_seeds(&mut self, now_ms: u64, out: &mut MembershipOutput) {
        if self.left {
            return;
        }
        let me = self.foca.identity().addr;
        let live: Vec<GossipId> = self.foca.iter_members().map(|m| m.id().clone()).collect();
        for seed in self.cfg.seeds.clone() {
            if seed != me && (!self.joined || !live.iter().any(|m| m.addr == seed)) {
                if let Err(e) = self.foca.announce(GossipId::seed(seed), &mut self.rt) {
                    tracing::debug!(%seed, error = %e, "announce failed");
                }
            }
        }
        if !self.joined {
            for member in live {
                if !self.cfg.seeds.contains(&member.addr) {
                    if let Err(e) = self.foca.announce(member, &mut self.rt) {
                        tracing::debug!(error = %e, "announce failed");
                    }
                }
            }
        }
        self.next_seed_ms = now_ms + self.cfg.seed_retry_ms;
        self.drain(now_ms, out);
    }
}

impl Membership for SwimMembership {
    fn me(&self) -> NodeInfo {
        self.foca.identity().to_info()
    }

    fn start(&mut self, now_ms: u64, out: &mut MembershipOutput) {
        self.announce_seeds(now_ms, out);
    }

    fn handle_datagram(
        &mut self,
        now_ms: u64,
        data: &[u8],
        out: &mut MembershipOutput,
    ) -> Result<(), MembershipError> {
        let data = match &self.mac {
            Some(mac) => {
                if data.len() < GOSSIP_TAG_BYTES {
                    return Err(MembershipError::BadTag);
                }
                let (body, tag) = data.split_at(data.len() - GOSSIP_TAG_BYTES);
                let mut m = mac.clone();
                m.update(body);
                m.verify_truncated_left(tag)
                    .map_err(|_| MembershipError::BadTag)?;
                body
            }
            None => data,
        };
        let res = self.foca.handle_data(data, &mut self.rt);
        self.drain(now_ms, out);
        res.map_err(MembershipError::from)
    }

    fn tick(&mut self, now_ms: u64, out: &mut MembershipOutput) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let timer = entry.remove();
            if let Err(e) = self.foca.handle_timer(timer, &mut self.rt) {
                tracing::debug!(error = %e, "swim timer");
            }
            self.drain(now_ms, out);
        }
        if now_ms >= self.next_seed_ms {
            self.announce_seeds(now_ms, out);
        }
    }

    fn next_wake_ms(&self) -> Option<u64> {
        let timer = self.timers.keys().next().map(|k| k.0);
        Some(timer.map_or(self.next_seed_ms, |t| t.min(self.next_seed_ms)))
    }

    fn leave(&mut self, now_ms: u64, out: &mut MembershipOutput) {
        if let Err(e) = self.foca.leave_cluster(&mut self.rt) {
            tracing::debug!(error = %e, "leave");
        }
        self.cfg.seeds.clear();
        self.left = true;
        self.next_seed_ms = u64::MAX;
        self.drain(now_ms, out);
    }

    fn live_members(&self) -> Vec<NodeInfo> {
        let mut v: Vec<NodeInfo> = self
            .foca
            .iter_members()
            .map(|m| m.id().to_info())
            .chain(std::iter::once(self.me()))
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id).then(b.generation.cmp(&a.generation)));
        v.dedup_by(|later, first| later.id == first.id);
        v
    }

    fn has_quorum(&self) -> bool {
        self.live_members().len() >= self.cfg.member_count_quorum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(n: u8) -> NodeInfo {
        NodeInfo {
            id: NodeId([n; 20]),
            host: format!("127.0.0.{n}"),
            client_port: 7000,
            peer_port: 17000,
            gossip_port: 7946,
            cores: 2,
            generation: u64::from(n),
        }
    }

    /// Delivers datagrams instantly between `nodes` (by gossip address) until quiet or `until_ms`.
    fn run(nodes: &mut [SwimMembership], mut now: u64, until_ms: u64, down: &[usize]) -> u64 {
        let addrs: Vec<SocketAddr> = nodes
            .iter()
            .map(|n| GossipId::from_info(&n.me()).unwrap().addr)
            .collect();
        let mut queue: Vec<(SocketAddr, Bytes)> = Vec::new();
        while now <= until_ms {
            for (i, n) in nodes.iter_mut().enumerate() {
                if down.contains(&i) {
                    continue;
                }
                let mut out = MembershipOutput::default();
                n.tick(now, &mut out);
                queue.extend(out.datagrams);
            }
            while let Some((to, data)) = queue.pop() {
                if let Some(i) = addrs.iter().position(|a| *a == to) {
                    if down.contains(&i) {
                        continue;
                    }
                    let mut out = MembershipOutput::default();
                    let _ = nodes[i].handle_datagram(now, &data, &mut out);
                    queue.extend(out.datagrams);
                }
            }
            now += 50;
        }
        now
    }

    #[test]
    fn seeds_join_converge_and_detect_a_dead_node() {
        let cfg = MembershipConfig {
            seeds: vec!["127.0.0.1:7946".parse().unwrap()],
            member_count_quorum: 2,
            ..MembershipConfig::default()
        };
        let mut nodes: Vec<SwimMembership> = (1..=3)
            .map(|n| SwimMembership::new(&info(n), cfg.clone(), u64::from(n)).unwrap())
            .collect();
        for n in &mut nodes {
            let mut out = MembershipOutput::default();
            n.start(0, &mut out);
        }
        let now = run(&mut nodes, 0, 3_000, &[]);
        for n in &nodes {
            assert_eq!(n.live_members().len(), 3, "{:?}", n.me().id);
            assert!(n.has_quorum());
            assert_eq!(n.coordinator(), NodeId([1; 20]));
        }
        // Node 1 (the coordinator) dies: the others see it down within the documented bound
        // and agree on the next-oldest coordinator.
        let bound = 1000 + 500 + 4000 + 2000;
        run(&mut nodes, now, now + bound, &[0]);
        for n in &nodes[1..] {
            assert_eq!(n.live_members().len(), 2);
            assert_eq!(n.coordinator(), NodeId([2; 20]));
        }
    }

    #[test]
    fn nodes_started_alone_merge_once_the_seed_answers() {
        let cfg = MembershipConfig {
            seeds: vec!["127.0.0.1:7946".parse().unwrap()],
            ..MembershipConfig::default()
        };
        let mut nodes: Vec<SwimMembership> = (1..=2)
            .map(|n| SwimMembership::new(&info(n), cfg.clone(), u64::from(n)).unwrap())
            .collect();
        // The seed (node 1) is unreachable for 5 s: node 2 keeps retrying.
        let now = run(&mut nodes, 0, 5_000, &[0]);
        assert_eq!(nodes[1].live_members().len(), 1);
        run(&mut nodes, now, now + 3_000, &[]);
        assert_eq!(nodes[0].live_members().len(), 2);
        assert_eq!(nodes[1].live_members().len(), 2);
    }

    #[test]
    fn datagrams_need_the_cluster_secret() {
        let with = |secret: &[u8]| MembershipConfig {
            seeds: vec!["127.0.0.1:7946".parse().unwrap()],
            secret: secret.to_vec(),
            ..MembershipConfig::default()
        };
        // Node 2 knows the secret, node 3 has another one: only 1 and 2 form a cluster.
        let mut nodes = vec![
            SwimMembership::new(&info(1), with(b"k"), 1).unwrap(),
            SwimMembership::new(&info(2), with(b"k"), 2).unwrap(),
            SwimMembership::new(&info(3), with(b"other"), 3).unwrap(),
        ];
        for n in &mut nodes {
            n.start(0, &mut MembershipOutput::default());
        }
        run(&mut nodes, 0, 3_000, &[]);
        assert_eq!(nodes[0].live_members().len(), 2);
        assert_eq!(nodes[1].live_members().len(), 2);
        assert_eq!(nodes[2].live_members().len(), 1);
        // A tagged datagram with one flipped bit is refused.
        let mut out = MembershipOutput::default();
        nodes[1].leave(3_000, &mut out);
        let (_, data) = out.datagrams.pop().unwrap();
        let mut bad = data.to_vec();
        bad[0] ^= 1;
        assert!(matches!(
            nodes[0].handle_datagram(3_000, &bad, &mut MembershipOutput::default()),
            Err(MembershipError::BadTag)
        ));
        assert!(nodes[0]
            .handle_datagram(3_000, &data, &mut MembershipOutput::default())
            .is_ok());
    }

    #[test]
    fn garbage_datagrams_are_errors_not_panics() {
        let mut m = SwimMembership::new(&info(1), MembershipConfig::default(), 1).unwrap();
        let mut out = MembershipOutput::default();
        for junk in [&b""[..], b"\x00", b"\xff\xff\xff\xff", &[7u8; 2000]] {
            assert!(m.handle_datagram(0, junk, &mut out).is_err());
        }
        assert_eq!(m.live_members().len(), 1);
    }
}
