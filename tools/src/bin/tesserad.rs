//! `tesserad`: the Tessera server.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("tesserad is not built yet")
}
