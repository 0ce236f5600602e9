//! `tessera-bench`: front end of the latency harness in `tessera-bench`.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("tessera-bench is not built yet")
}
