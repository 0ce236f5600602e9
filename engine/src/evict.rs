//! Eviction policy arithmetic: Redis's LFU counter (logarithmic increment, time decay), the
//! ranking of sampled candidates per policy, and the shard's small deterministic PRNG.

use crate::config::EvictionPolicy;
use crate::map::Meta;

/// Initial LFU counter of a new key (Redis's `LFU_INIT_VAL`).
pub const LFU_INIT: u8 = 5;

/// SplitMix64: a tiny seeded generator (sampling, RANDOMKEY, lock tokens). Deterministic.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Redis's `LFUDecrAndReturn`: one decrement per `decay_minutes` elapsed since last access.
pub fn lfu_decayed(counter: u8, access_ms: u64, now_ms: u64, decay_minutes: u32) -> u8 {
    if decay_minutes == 0 {
        return counter;
    }
    let periods = now_ms.saturating_sub(access_ms) / 60_000 / u64::from(decay_minutes);
    counter.saturating_sub(u8::try_from(periods).unwrap_or(u8::MAX))
}

/// Redis's `LFULogIncr`.
pub fn lfu_incremented(counter: u8, log_factor: u32, rng: &mut Rng) -> u8 {
    if counter == u8::MAX {
        return counter;
    }
    let base = f64::from(counter.saturating_sub(LFU_INIT));
    let p = 1.0 / (base * f64::from(log_factor) + 1.0);
    if rng.unit() < p {
        counter + 1
    } else {
        counter
    }
}

/// Eviction score of a candidate: the lowest score is evicted first.
pub fn score(policy: EvictionPolicy, meta: &Meta, now_ms: u64, decay_minutes: u32) -> u64 {
    match policy {
        EvictionPolicy::AllkeysLfu => {
            (u64::from(lfu_decayed(meta.lfu, meta.access_ms, now_ms, decay_minutes)) << 48)
                | (meta.access_ms & ((1 << 48) - 1))
        }
        EvictionPolicy::VolatileTtl => meta.expire_at_ms,
        _ => meta.access_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
    }

    #[test]
    fn lfu_counter_grows_logarithmically_and_decays() {
        let mut rng = Rng::new(1);
        let mut c = LFU_INIT;
        for _ in 0..1000 {
            c = lfu_incremented(c, 10, &mut rng);
        }
        assert!(c > LFU_INIT + 3 && c < 40, "counter {c}");
        assert_eq!(lfu_decayed(10, 0, 3 * 60_000, 1), 7);
        assert_eq!(lfu_decayed(10, 0, 3 * 60_000, 0), 10);
        assert_eq!(lfu_decayed(2, 0, 1000 * 60_000, 1), 0);
    }
}
