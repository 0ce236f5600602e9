//! Workload generation: which command to send next and with which key and value size.
//!
//! A [`Workload`] is the description (mix, key space, distribution, value sizes, TTL); a
//! [`Generator`] is one connection's seeded stream of [`Op`]s drawn from it. Generators never do
//! I/O or read the clock, so their output is reproducible from the seed.

use std::fmt;
use std::str::FromStr;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::Serialize;

use crate::route::OwnerFilter;
use crate::BenchError;

/// A command type, as sent and as reported (one histogram each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum OpKind {
    /// `GET key` / `get key`.
    Get,
    /// `SET key value [PX ttl]` / `set key 0 exptime len`.
    Set,
    /// `INCR {prefix}ctr:{n}` / `incr`.
    Incr,
    /// `DEL key` / `delete key`.
    Del,
    /// Tessera's `DM.PUT dmap key value [PX ttl]`.
    DmPut,
    /// Tessera's `DM.GET dmap key`.
    DmGet,
    /// A short range read (YCSB E's scan): `MGET` of consecutive keys / multi-key `get`.
    Scan,
    /// Read-modify-write (YCSB F): a `GET` and a `SET` of the same key pipelined, one sample.
    Rmw,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 8] = [
        OpKind::Get,
        OpKind::Set,
        OpKind::Incr,
        OpKind::Del,
        OpKind::DmPut,
        OpKind::DmGet,
        OpKind::Scan,
        OpKind::Rmw,
    ];

    /// The name used in tables, JSON and interval-log tags.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "GET",
            OpKind::Set => "SET",
            OpKind::Incr => "INCR",
            OpKind::Del => "DEL",
            OpKind::DmPut => "DM.PUT",
            OpKind::DmGet => "DM.GET",
            OpKind::Scan => "SCAN",
            OpKind::Rmw => "RMW",
        }
    }

    /// Position in [`OpKind::ALL`], for per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OpKind {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let k = match s.to_ascii_lowercase().as_str() {
            "get" => OpKind::Get,
            "set" => OpKind::Set,
            "incr" => OpKind::Incr,
            "del" | "delete" => OpKind::Del,
            "dm.put" | "dmput" => OpKind::DmPut,
            "dm.get" | "dmget" => OpKind::DmGet,
            "scan" => OpKind::Scan,
            "rmw" => OpKind::Rmw,
            _ => return Err(BenchError::Config(format!("unknown command {s:?}"))),
        };
        Ok(k)
    }
}

/// How keys are drawn from the key space `0..keys`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Zipf with exponent `s` (0.99 is YCSB's): key `r-1` has weight `1/r^s`.
    Zipf(f64),
    /// `start, start+1, ...` wrapping at the end of the connection's range.
    Sequential,
    /// YCSB D's "latest": inserts append new keys, reads favour recent inserts with Zipf(s).
    Latest(f64),
}

impl FromStr for KeyDist {
    type Err = BenchError;
    /// `uniform`, `sequential`, `zipf` (s = 0.99), `zipf:S`, `latest`, `latest:S`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, arg) = s.split_once(':').unwrap_or((s, ""));
        let param = || -> Result<f64, BenchError> {
            if arg.is_empty() {
                return Ok(0.99);
            }
            let v: f64 = arg
                .parse()
                .map_err(|_| BenchError::Config(format!("bad Zipf exponent {arg:?}")))?;
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(BenchError::Config(format!(
                    "Zipf exponent {v} must be >= 0"
                )))
            }
        };
        match name {
            "uniform" => Ok(KeyDist::Uniform),
            "sequential" | "seq" => Ok(KeyDist::Sequential),
            "zipf" => Ok(KeyDist::Zipf(param()?)),
            "latest" => Ok(KeyDist::Latest(param()?)),
            _ => Err(BenchError::Config(format!(
                "unknown key distribution {s:?}"
            ))),
        }
    }
}

/// Value sizes in bytes, drawn uniformly from `min..=max` (fixed when equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ValueSize {
    /// Smallest value, bytes.
    pub min: usize,
    /// Largest value, bytes (at most [`VALUE_BYTES_MAX`]).
    pub max: usize,
}

/// Largest key space (2^48): key numbers plus scan lengths and YCSB D inserts stay far from
/// `u64` overflow.
pub const KEYS_MAX: u64 = 1 << 48;

/// Largest value size the generator will produce (memcached's default item limit is 1 MiB).
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

impl FromStr for ValueSize {
    type Err = BenchError;
    /// `32` or `16-128`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let num = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| BenchError::Config(format!("bad value size {s:?}")))
        };
        let (min, max) = match s.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(s)?, num(s)?),
        };
        if min > max || max > VALUE_BYTES_MAX {
            return Err(BenchError::Config(format!(
                "value size {s:?}: need min <= max <= {VALUE_BYTES_MAX}"
            )));
        }
        Ok(ValueSize { min, max })
    }
}

/// A YCSB core workload preset (Cooper et al., 2010), mapped onto cache commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Ycsb {
    /// A: update heavy, 50% read / 50% update, Zipf.
    A,
    /// B: read mostly, 95% read / 5% update, Zipf.
    B,
    /// C: read only, Zipf.
    C,
    /// D: read latest, 95% read / 5% insert, reads favour recent inserts.
    D,
    /// E: short ranges, 95% scan (up to 100 consecutive keys) / 5% insert, Zipf.
    E,
    /// F: read-modify-write, 50% read / 50% RMW, Zipf.
    F,
}

/// What to send: the command mix and the shape of keys and values.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    /// Command kinds with integer weights (at least one weight non-zero).
    pub mix: Vec<(OpKind, u32)>,
    /// Size of the key space: keys are `{key_prefix}0 .. {key_prefix}{keys-1}` (1..=[`KEYS_MAX`]).
    pub keys: u64,
    /// How keys are drawn.
    pub key_dist: KeyDist,
    /// Prefix of every key (`key:` gives `key:17`).
    pub key_prefix: String,
    /// Value sizes for SET, DM.PUT and RMW.
    pub value_size: ValueSize,
    /// TTL put on writes, milliseconds (`None`: no expiry). memcached gets it rounded up to s.
    pub ttl_ms: Option<u64>,
    /// DMap name for DM.PUT / DM.GET.
    pub dmap: String,
    /// Longest scan (number of consecutive keys), for [`OpKind::Scan`].
    pub scan_len_max: u32,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            mix: vec![(OpKind::Get, 9), (OpKind::Set, 1)],
            keys: 1_000_000,
            key_dist: KeyDist::Uniform,
            key_prefix: "key:".into(),
            value_size: ValueSize { min: 32, max: 32 },
            ttl_ms: None,
            dmap: "bench".into(),
            scan_len_max: 100,
        }
    }
}

/// Parses a mix such as `get=9,set=1` or `get:90,set:10`.
pub fn parse_mix(s: &str) -> Result<Vec<(OpKind, u32)>, BenchError> {
    let mut mix = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, w) = part
            .split_once(['=', ':'])
            .ok_or_else(|| BenchError::Config(format!("mix entry {part:?} is not cmd=weight")))?;
        let w: u32 = w
            .trim()
            .parse()
            .map_err(|_| BenchError::Config(format!("bad weight in {part:?}")))?;
        mix.push((k.trim().parse()?, w));
    }
    Ok(mix)
}

impl Workload {
    /// The workload of a YCSB preset over `keys` keys (other fields default).
    pub fn ycsb(preset: Ycsb, keys: u64) -> Workload {
        let zipf = KeyDist::Zipf(0.99);
        let (mix, key_dist) = match preset {
            Ycsb::A => (vec![(OpKind::Get, 50), (OpKind::Set, 50)], zipf),
            Ycsb::B => (vec![(OpKind::Get, 95), (OpKind::Set, 5)], zipf),
            Ycsb::C => (vec![(OpKind::Get, 100)], zipf),
            Ycsb::D => (
                vec![(OpKind::Get, 95), (OpKind::Set, 5)],
                KeyDist::Latest(0.99),
            ),
            Ycsb::E => (vec![(OpKind::Scan, 95), (OpKind::Set, 5)], zipf),
            Ycsb::F => (vec![(OpKind::Get, 50), (OpKind::Rmw, 50)], zipf),
        };
        Workload {
            mix,
            keys,
            key_dist,
            ..Workload::default()
        }
    }

    /// Checks the invariants the generator relies on.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.keys == 0 || self.keys > KEYS_MAX {
            return Err(BenchError::Config(format!(
                "key space must hold 1..={KEYS_MAX} keys"
            )));
        }
        if self.mix.iter().all(|&(_, w)| w == 0) {
            return Err(BenchError::Config(
                "command mix has no non-zero weight".into(),
            ));
        }
        if self.scan_len_max == 0 {
            return Err(BenchError::Config("scan length must be >= 1".into()));
        }
        if self.value_size.min > self.value_size.max || self.value_size.max > VALUE_BYTES_MAX {
            return Err(BenchError::Config("bad value size range".into()));
        }
        Ok(())
    }

    /// Owner routing keeps each command on one key of the connection's core: only GET, SET,
    /// DEL and RMW (INCR's, DM.*'s and scans' keys are not `{prefix}N`), and no YCSB D inserts.
    pub fn check_owner_routable(&self) -> Result<(), BenchError> {
        let routable = [OpKind::Get, OpKind::Set, OpKind::Del, OpKind::Rmw];
        if let Some(&(k, _)) = self
            .mix
            .iter()
            .find(|&&(k, w)| w > 0 && !routable.contains(&k))
        {
            return Err(BenchError::Config(format!(
                "route=owner supports GET, SET, DEL and RMW only, not {k}"
            )));
        }
        if matches!(self.key_dist, KeyDist::Latest(_)) {
            return Err(BenchError::Config(
                "route=owner does not support the latest distribution".into(),
            ));
        }
        Ok(())
    }

    /// True when the mix contains `kind` with a non-zero weight.
    pub fn uses(&self, kind: OpKind) -> bool {
        self.mix.iter().any(|&(k, w)| k == kind && w > 0)
    }
}

/// One request to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    /// Command type.
    pub kind: OpKind,
    /// Key number (the key is `{prefix}{key}`); for a scan, the first key.
    pub key: u64,
    /// Value length for writes.
    pub value_len: usize,
    /// Number of keys for a scan (1 otherwise).
    pub count: u32,
}

/// One connection's seeded stream of operations.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: SmallRng,
    kinds: Vec<OpKind>,
    cumulative: Vec<u32>,
    total: u32,
    keys: u64,
    dist: KeyDist,
    zipf: Option<Zipf<f64>>,
    value_size: ValueSize,
    scan_len_max: u32,
    /// Sequential distribution: next key and the half-open range it cycles through.
    seq_next: u64,
    seq_range: (u64, u64),
    /// Latest distribution: the next key this generator inserts, and the insert stride.
    insert_next: u64,
    insert_stride: u64,
    /// Owner routing: only keys this filter accepts are drawn.
    filter: Option<OwnerFilter>,
}

/// Draws per key before an owner-routed generator gives up and sends an unowned key (which
/// the server's cross-core counters then show); per core of the server.
const OWNER_DRAWS_PER_CORE: u32 = 64;

impl Generator {
    /// A generator for `workload`, seeded with `seed`. Sequential keys cycle through `range`
    /// (clamped to the key space); `lane` of `lanes` spreads inserts of YCSB D across connections.
    pub fn new(workload: &Workload, seed: u64, range: (u64, u64), lane: u64, lanes: u64) -> Self {
        let mut kinds = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0u32;
        for &(k, w) in &workload.mix {
            if w > 0 {
                total = total.saturating_add(w);
                kinds.push(k);
                cumulative.push(total);
            }
        }
        assert!(total > 0, "workload validated: mix has a non-zero weight");
        let zipf = match workload.key_dist {
            KeyDist::Zipf(s) | KeyDist::Latest(s) => {
                Some(Zipf::new(workload.keys, s).expect("validated: keys >= 1, s >= 0"))
            }
            _ => None,
        };
        let lo = range.0.min(workload.keys - 1);
        let hi = range.1.clamp(lo + 1, workload.keys);
        Generator {
            rng: SmallRng::seed_from_u64(seed),
            kinds,
            cumulative,
            total,
            keys: workload.keys,
            dist: workload.key_dist,
            zipf,
            value_size: workload.value_size,
            scan_len_max: workload.scan_len_max,
            seq_next: lo,
            seq_range: (lo, hi),
            insert_next: workload.keys + lane,
            insert_stride: lanes.max(1),
            filter: None,
        }
    }

    /// Restricts keys to those `filter` accepts (owner routing). Fails when none of the first
    /// 100 000 keys of the space is accepted (the key space is too small to have keys there).
    pub fn restrict(&mut self, mut filter: OwnerFilter) -> Result<(), BenchError> {
        if !(0..self.keys.min(100_000)).any(|k| filter.accepts(k)) {
            return Err(BenchError::Config(format!(
                "no key of the key space belongs to core {}: use more keys",
                filter.core()
            )));
        }
        self.filter = Some(filter);
        Ok(())
    }

    /// Draws the next operation.
    pub fn next_op(&mut self) -> Op {
        let pick = self.rng.gen_range(0..self.total);
        let i = self.cumulative.partition_point(|&c| c <= pick);
        let kind = self.kinds[i];
        let is_insert = matches!(self.dist, KeyDist::Latest(_)) && kind == OpKind::Set;
        let key = if is_insert {
            let k = self.insert_next;
            self.insert_next += self.insert_stride;
            k
        } else {
            self.next_key()
        };
        let value_len = if self.value_size.min == self.value_size.max {
            self.value_size.min
        } else {
            self.rng
                .gen_range(self.value_size.min..=self.value_size.max)
        };
        let count = if kind == OpKind::Scan {
            self.rng.gen_range(1..=self.scan_len_max)
        } else {
            1
        };
        Op {
            kind,
            key,
            value_len,
            count,
        }
    }

    /// Draws a key number according to the distribution (and the owner filter, if any: draws
    /// are repeated until the filter accepts one, at most [`OWNER_DRAWS_PER_CORE`] per core).
    pub fn next_key(&mut self) -> u64 {
        let mut k = self.draw_key();
        if let Some(mut f) = self.filter.take() {
            for _ in 1..OWNER_DRAWS_PER_CORE.saturating_mul(f.cores()) {
                if f.accepts(k) {
                    break;
                }
                k = self.draw_key();
            }
            self.filter = Some(f);
        }
        k
    }

    fn draw_key(&mut self) -> u64 {
        match self.dist {
            KeyDist::Uniform => self.rng.gen_range(0..self.keys),
            KeyDist::Zipf(_) => self.zipf_rank() - 1,
            KeyDist::Sequential => {
                let k = self.seq_next;
                self.seq_next += 1;
                if self.seq_next >= self.seq_range.1 {
                    self.seq_next = self.seq_range.0;
                }
                k
            }
            KeyDist::Latest(_) => {
                // Rank 1 is the key just below this connection's insert frontier.
                let r = self.zipf_rank();
                self.insert_next.saturating_sub(r)
            }
        }
    }

    fn zipf_rank(&mut self) -> u64 {
        let z = self.zipf.as_ref().expect("zipf distribution built in new");
        // The sample is an integer-valued float in 1..=keys.
        (z.sample(&mut self.rng) as u64).clamp(1, self.keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wl(dist: KeyDist, keys: u64) -> Workload {
        Workload {
            keys,
            key_dist: dist,
            ..Workload::default()
        }
    }

    #[test]
    fn zipf_follows_the_power_law() {
        // With s = 1 and n = 100, P(rank r) = 1 / (r * H_100), H_100 ~= 5.187.
        let keys = 100;
        let mut g = Generator::new(&wl(KeyDist::Zipf(1.0), keys), 7, (0, keys), 0, 1);
        let n = 200_000;
        let mut counts = vec![0u64; keys as usize];
        for _ in 0..n {
            let k = g.next_key();
            assert!(k < keys);
            counts[k as usize] += 1;
        }
        let h: f64 = (1..=keys).map(|r| 1.0 / r as f64).sum();
        for r in [1u64, 2, 3, 10, 50] {
            let want = f64::from(n) / (r as f64 * h);
            let got = counts[(r - 1) as usize] as f64;
            // 5 standard deviations of a binomial count, plus 2% for the rejection sampler.
            let tol = 5.0 * want.sqrt() + 0.02 * want;
            assert!(
                (got - want).abs() < tol,
                "rank {r}: got {got}, want {want:.0}"
            );
        }
        // Ratio of rank 1 to rank 2 is 2^s.
        let ratio = counts[0] as f64 / counts[1] as f64;
        assert!((ratio - 2.0).abs() < 0.1, "ratio {ratio}");
    }

    #[test]
    fn zipf_zero_is_uniform_and_uniform_covers_the_space() {
        for dist in [KeyDist::Zipf(0.0), KeyDist::Uniform] {
            let mut g = Generator::new(&wl(dist, 10), 3, (0, 10), 0, 1);
            let mut counts = [0u32; 10];
            for _ in 0..50_000 {
                counts[g.next_key() as usize] += 1;
            }
            for c in counts {
                assert!((4_500..5_500).contains(&c), "{dist:?} {counts:?}");
            }
        }
    }

    #[test]
    fn sequential_cycles_through_its_range() {
        let mut g = Generator::new(&wl(KeyDist::Sequential, 100), 1, (10, 13), 0, 1);
        let keys: Vec<u64> = (0..7).map(|_| g.next_key()).collect();
        assert_eq!(keys, vec![10, 11, 12, 10, 11, 12, 10]);
    }

    #[test]
    fn owner_routing_draws_only_the_cores_keys() {
        let w = wl(KeyDist::Uniform, 1000);
        for core in 0..2 {
            let mut g = Generator::new(&w, 7, (0, 1000), 0, 1);
            g.restrict(OwnerFilter::new("key:", 2, core).unwrap())
                .unwrap();
            let mut check = OwnerFilter::new("key:", 2, core).unwrap();
            let mut seen = std::collections::HashSet::new();
            for _ in 0..20_000 {
                let k = g.next_key();
                assert!(k < 1000 && check.accepts(k), "key {k} is not core {core}'s");
                seen.insert(k);
            }
            let owned = (0..1000).filter(|&k| check.accepts(k)).count();
            assert_eq!(seen.len(), owned, "every owned key is drawn");
        }
        // One key only, owned by core 0: core 1 has nothing to draw.
        let mut g = Generator::new(&wl(KeyDist::Uniform, 1), 7, (0, 1), 0, 1);
        let mut f = OwnerFilter::new("key:", 2, 0).unwrap();
        let other = u32::from(f.accepts(0));
        assert!(g
            .restrict(OwnerFilter::new("key:", 2, other).unwrap())
            .is_err());
        let mut w = wl(KeyDist::Uniform, 10);
        w.mix = vec![(OpKind::Incr, 1)];
        assert!(w.check_owner_routable().is_err());
        w.mix = vec![(OpKind::Get, 1), (OpKind::Rmw, 1)];
        assert!(w.check_owner_routable().is_ok());
        w.key_dist = KeyDist::Latest(0.99);
        assert!(w.check_owner_routable().is_err());
    }

    #[test]
    fn mix_weights_are_respected() {
        let w = Workload {
            mix: parse_mix("get=3,set=1,del=0").unwrap(),
            ..Workload::default()
        };
        let mut g = Generator::new(&w, 9, (0, w.keys), 0, 1);
        let mut gets = 0;
        for _ in 0..40_000 {
            match g.next_op().kind {
                OpKind::Get => gets += 1,
                OpKind::Set => {}
                other => panic!("unexpected {other}"),
            }
        }
        assert!((29_000..31_000).contains(&gets), "{gets}");
    }

    #[test]
    fn latest_reads_follow_inserts() {
        let w = Workload::ycsb(Ycsb::D, 1000);
        let mut g = Generator::new(&w, 5, (0, 1000), 0, 1);
        let mut max_insert = 0;
        for _ in 0..10_000 {
            let op = g.next_op();
            if op.kind == OpKind::Set {
                assert!(op.key >= 1000, "inserts append beyond the preloaded space");
                max_insert = max_insert.max(op.key);
            } else {
                assert!(op.key <= max_insert.max(1000));
            }
        }
        assert!(max_insert > 1000);
    }

    #[test]
    fn parses_options() {
        assert_eq!(
            "16-64".parse::<ValueSize>().unwrap(),
            ValueSize { min: 16, max: 64 }
        );
        assert!("64-16".parse::<ValueSize>().is_err());
        assert_eq!("zipf:1.2".parse::<KeyDist>().unwrap(), KeyDist::Zipf(1.2));
        assert!("zipf:-1".parse::<KeyDist>().is_err());
        assert!(parse_mix("get").is_err());
        assert!(parse_mix("frob=1").is_err());
        for p in [Ycsb::A, Ycsb::B, Ycsb::C, Ycsb::D, Ycsb::E, Ycsb::F] {
            Workload::ycsb(p, 10).validate().unwrap();
        }
    }
}
