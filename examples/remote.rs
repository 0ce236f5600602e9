//! Client-server mode: the same DMap API against a running `tesserad`.
//!
//! Start a server (`cargo run --release -p tessera-tools --bin tesserad`), then
//! `cargo run --example remote [host:port]`.

use std::time::Duration;

use tessera::{Client, ClientConfig, PutOptions};

fn main() -> Result<(), tessera::Error> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6379".to_owned());
    let client = Client::connect(ClientConfig::new(addr))?;
    let sessions = client.dmap("sessions");
    sessions.put("alice", "token-1", PutOptions::ttl(Duration::from_secs(60)))?;
    println!("alice -> {:?}", sessions.get("alice")?);
    println!("hits = {}", client.dmap("counters").incr("hits", 1)?);
    Ok(())
}
