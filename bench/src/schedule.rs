//! The open-loop scheduler: the intended send time of every request at a target rate, with
//! uniform or Poisson inter-arrival times.
//!
//! Time is passed in (nanoseconds since the run's start), never read here, so the scheduler is
//! tested with a fake clock. A request's latency is measured from its intended time, not from
//! when it was actually sent: when the server stalls, requests that should have gone out during
//! the stall are charged for the wait (coordinated-omission correction, as in wrk2 / rpc-perf).

use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp1};
use serde::Serialize;
use std::str::FromStr;

use crate::BenchError;

/// Inter-arrival process of the open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Arrival {
    /// Evenly spaced requests, `1/rate` apart.
    Uniform,
    /// Exponential inter-arrival times with mean `1/rate` (a Poisson process).
    Poisson,
}

impl FromStr for Arrival {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "uniform" => Ok(Arrival::Uniform),
            "poisson" => Ok(Arrival::Poisson),
            _ => Err(BenchError::Config(format!("unknown arrival process {s:?}"))),
        }
    }
}

/// Intended send times of one request stream.
#[derive(Debug, Clone)]
pub struct Schedule {
    mean_gap_ns: f64,
    arrival: Arrival,
    rng: SmallRng,
    /// Next intended time; kept as f64 so a non-integer gap does not drift.
    next_ns: f64,
}

impl Schedule {
    /// A stream of `rate_per_s` requests per second whose first request is intended at
    /// `start_ns + phase * gap` (uniform; `phase` in `[0, 1)` staggers connections) or one
    /// exponential gap after `start_ns` (Poisson).
    pub fn new(rate_per_s: f64, arrival: Arrival, start_ns: u64, phase: f64, seed: u64) -> Self {
        assert!(
            rate_per_s.is_finite() && rate_per_s > 0.0,
            "rate validated positive"
        );
        let mean_gap_ns = 1e9 / rate_per_s;
        let mut s = Schedule {
            mean_gap_ns,
            arrival,
            rng: SmallRng::seed_from_u64(seed),
            next_ns: start_ns as f64,
        };
        match arrival {
            Arrival::Uniform => s.next_ns += phase.clamp(0.0, 1.0) * mean_gap_ns,
            Arrival::Poisson => s.advance(),
        }
        s
    }

    /// The next intended send time, ns.
    pub fn peek_ns(&self) -> u64 {
        self.next_ns as u64
    }

    /// If the next request is due at `now_ns`, returns its intended time and moves on.
    pub fn pop_due(&mut self, now_ns: u64) -> Option<u64> {
        let t = self.peek_ns();
        if t <= now_ns {
            self.advance();
            Some(t)
        } else {
            None
        }
    }

    /// How many requests are intended in `[max(next, from_ns), until_ns)` and not yet popped:
    /// exact for uniform arrivals, the expected number for Poisson.
    pub fn backlog(&self, from_ns: u64, until_ns: u64) -> u64 {
        let first = self.next_ns.max(from_ns as f64);
        let until = until_ns as f64;
        if first >= until {
            return 0;
        }
        match self.arrival {
            // Intended times next + k*gap for k >= 0 that fall before `until`.
            Arrival::Uniform => {
                let skip = ((first - self.next_ns) / self.mean_gap_ns).ceil();
                let last = ((until - self.next_ns) / self.mean_gap_ns).ceil();
                (last - skip).max(0.0) as u64
            }
            Arrival::Poisson => ((until - first) / self.mean_gap_ns).round() as u64,
        }
    }

    fn advance(&mut self) {
        let gap = match self.arrival {
            Arrival::Uniform => self.mean_gap_ns,
            Arrival::Poisson => {
                let e: f64 = Exp1.sample(&mut self.rng);
                e * self.mean_gap_ns
            }
        };
        self.next_ns += gap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a schedule with a fake clock that jumps by `step_ns` and returns every intended
    /// time released before `end_ns`, with the clock reading at release.
    fn drive(s: &mut Schedule, step_ns: u64, end_ns: u64) -> Vec<(u64, u64)> {
        let mut now = 0;
        let mut out = Vec::new();
        while now <= end_ns {
            while let Some(t) = s.pop_due(now) {
                out.push((t, now));
            }
            now += step_ns;
        }
        out
    }

    #[test]
    fn uniform_intended_times_are_exact_and_independent_of_the_clock() {
        // 1000/s with a quarter-gap phase: 250 us, 1250 us, 2250 us, ...
        let mut a = Schedule::new(1000.0, Arrival::Uniform, 0, 0.25, 1);
        let mut b = a.clone();
        let fine = drive(&mut a, 10_000, 1_000_000_000);
        // A clock that ticks rarely (a stalled sender) releases the same intended times late.
        let coarse = drive(&mut b, 100_000_000, 1_000_000_000);
        assert_eq!(fine.len(), 1000);
        let ft: Vec<u64> = fine.iter().map(|x| x.0).collect();
        let ct: Vec<u64> = coarse.iter().map(|x| x.0).collect();
        assert!(ft == ct, "intended times depend on the clock");
        for (i, (t, released)) in fine.iter().enumerate() {
            assert_eq!(*t, 250_000 + i as u64 * 1_000_000);
            assert!(*released >= *t && *released - *t < 10_000);
        }
        // Released late, but still charged from the intended time.
        assert!(coarse.iter().any(|(t, r)| r - t > 50_000_000));
    }

    #[test]
    fn non_integer_gaps_do_not_drift() {
        // 3/s has a 333_333_333.33 ns gap: after 3000 requests the error must stay < 1 ns.
        let mut s = Schedule::new(3.0, Arrival::Uniform, 0, 0.0, 1);
        let mut last = 0;
        for _ in 0..3001 {
            last = s.pop_due(u64::MAX).unwrap();
        }
        assert!((last as i64 - 1_000_000_000_000).abs() <= 1, "{last}");
    }

    #[test]
    fn poisson_rate_and_gap_distribution_are_accurate() {
        let rate = 10_000.0;
        let mut s = Schedule::new(rate, Arrival::Poisson, 0, 0.0, 42);
        let times = drive(&mut s, 7_919, 10_000_000_000);
        let n = times.len() as f64;
        // 10 s at 10k/s: 100k expected, sd ~316; allow 5 sd.
        assert!((n - 100_000.0).abs() < 1_600.0, "count {n}");
        let gaps: Vec<f64> = times.windows(2).map(|w| (w[1].0 - w[0].0) as f64).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        assert!((mean - 100_000.0).abs() < 1_000.0, "mean gap {mean}");
        // Exponential: P(gap > mean) = e^-1 ~= 0.368, and the sd equals the mean.
        let above = gaps.iter().filter(|&&g| g > 100_000.0).count() as f64 / gaps.len() as f64;
        assert!((above - 0.368).abs() < 0.01, "{above}");
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!((var.sqrt() / mean - 1.0).abs() < 0.03);
        // Intended times are non-decreasing.
        assert!(times.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn backlog_counts_requests_not_yet_released() {
        let mut s = Schedule::new(1000.0, Arrival::Uniform, 0, 0.0, 0);
        // Intended at 0, 1, 2, ... ms; nothing popped: [0 ms, 10 ms) holds 10.
        assert_eq!(s.backlog(0, 10_000_000), 10);
        assert_eq!(s.backlog(0, 10_000_001), 11);
        assert_eq!(s.backlog(5_000_000, 10_000_000), 5);
        for _ in 0..4 {
            s.pop_due(u64::MAX).unwrap();
        }
        assert_eq!(s.backlog(0, 10_000_000), 6);
        assert_eq!(s.backlog(0, 4_000_000), 0);
        let p = Schedule::new(1000.0, Arrival::Poisson, 0, 0.0, 0);
        let b = p.backlog(0, 1_000_000_000);
        assert!((990..=1000).contains(&b), "{b}");
    }

    #[test]
    fn nothing_is_due_before_its_time() {
        let mut s = Schedule::new(100.0, Arrival::Uniform, 5_000_000, 0.0, 0);
        assert_eq!(s.pop_due(4_999_999), None);
        assert_eq!(s.pop_due(5_000_000), Some(5_000_000));
        assert_eq!(s.peek_ns(), 15_000_000);
    }
}
