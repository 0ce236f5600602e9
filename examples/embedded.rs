//! Embedded mode: run a Tessera node inside this process and use a DMap from several threads.
//!
//! `cargo run --example embedded`

use std::time::Duration;

use tessera::{Node, PutOptions};

fn main() -> Result<(), tessera::Error> {
    // One pinned executor per CPU, no listening port: the node serves only this process.
    let node = Node::start_embedded(0)?;
    let sessions = node.dmap("sessions");

    sessions.put("alice", "token-1", PutOptions::ttl(Duration::from_secs(60)))?;
    let entry = sessions.get_entry("alice")?.expect("just written");
    println!(
        "alice -> {:?} (expires at {} ms)",
        String::from_utf8_lossy(&entry.value),
        entry.ttl_ms
    );

    // Handles are cheap to clone and usable from any thread; atomic operations run on the
    // core that owns the key.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let counters = node.dmap("counters");
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    counters.incr("hits", 1).expect("incr");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    println!("hits = {}", node.dmap("counters").incr("hits", 0)?);

    // A lock with a lease, released by the guard. As in Olric, a lock is an entry of the map
    // (holding the token), so it gets its own key.
    {
        let locks = node.dmap("locks");
        let guard = locks.lock("alice", Duration::from_secs(1), Duration::from_secs(10))?;
        println!(
            "locked alice with token {:?}",
            String::from_utf8_lossy(guard.token())
        );
        guard.unlock()?;
    }

    // Pub/sub reaches subscribers on every core.
    let inbox = node.subscribe(&["events"])?;
    node.publish("events", "hello")?;
    if let Ok((channel, message)) = inbox.recv_timeout(Duration::from_secs(1)) {
        println!(
            "{} <- {}",
            String::from_utf8_lossy(&channel),
            String::from_utf8_lossy(&message)
        );
    }

    node.shutdown();
    Ok(())
}
