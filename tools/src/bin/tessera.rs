//! `tessera`: the command-line client (REPL, one-shot commands, stats, cluster status).
fn main() -> anyhow::Result<()> {
    anyhow::bail!("the tessera CLI is not built yet")
}
