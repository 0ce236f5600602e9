//! `tessera-bench`: front end of the latency harness in `tessera-bench`. Everything, including
//! argument parsing, lives in the library (`tessera_bench::cli`) so it is tested there.
fn main() -> anyhow::Result<()> {
    tessera_bench::cli::main_with_args(std::env::args_os(), &mut std::io::stdout().lock())?;
    Ok(())
}
