//! `tessera-bench`: the latency harness.
