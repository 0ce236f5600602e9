//! Cross-core round trip: the mailbox (crossbeam channels + doorbell) this crate uses versus
//! glommio's own `shared_channel`, between two executors pinned to different CPUs.
//!
//! `cargo run --release -p tessera-net --example mesh_rtt [round_trips]`
//!
//! Prints round trips per second and the mean round trip for each, one message in flight
//! (the worst case for both: every message may find the other side parked), and with 16 in
//! flight.

use std::time::Instant;

use glommio::channels::shared_channel;
use tessera_net::runtime::mailbox::{mailbox, Received};
use tessera_net::runtime::{spawn_executor, RuntimeConfig};

fn config() -> RuntimeConfig {
    RuntimeConfig {
        cores: 2,
        ..RuntimeConfig::default()
    }
}

fn spin() -> std::time::Duration {
    std::time::Duration::from_micros(
        std::env::var("SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(config().spin_before_park_us),
    )
}

fn crossbeam_mailbox(n: u64, window: u64) -> f64 {
    let cfg = config();
    let cpus = cfg.cpus();
    let (tx_a, parts_a) = mailbox::<u64, u64>(1024).unwrap();
    let (tx_b, parts_b) = mailbox::<u64, u64>(1024).unwrap();
    let echo = spawn_executor(1, cpus[1], &cfg, move || async move {
        let inbox = parts_b.bind(spin()).unwrap();
        let mut seen = 0;
        while seen < n {
            if let Some(Received::Request(i)) = inbox.recv().await {
                let _ = tx_a.respond(i);
                seen += 1;
            }
        }
    })
    .unwrap();
    let driver = spawn_executor(0, cpus[0], &cfg, move || async move {
        let inbox = parts_a.bind(spin()).unwrap();
        let start = Instant::now();
        let mut sent = 0;
        let mut got = 0;
        while sent < window.min(n) {
            tx_b.try_send(sent).unwrap();
            sent += 1;
        }
        while got < n {
            if let Some(Received::Response(_)) = inbox.recv().await {
                got += 1;
                if sent < n {
                    while tx_b.try_send(sent).is_err() {
                        glommio::yield_if_needed().await;
                    }
                    sent += 1;
                }
            }
        }
        start.elapsed().as_secs_f64()
    })
    .unwrap();
    let secs = driver.join().unwrap();
    echo.join().unwrap();
    secs
}

fn glommio_channels(n: u64, window: u64) -> f64 {
    let cfg = config();
    let cpus = cfg.cpus();
    let (to_b, from_a) = shared_channel::new_bounded::<u64>(1024);
    let (to_a, from_b) = shared_channel::new_bounded::<u64>(1024);
    let echo = spawn_executor(1, cpus[1], &cfg, move || async move {
        let rx = from_a.connect().await;
        let tx = to_a.connect().await;
        for _ in 0..n {
            let i = rx.recv().await.unwrap();
            tx.send(i).await.unwrap();
        }
    })
    .unwrap();
    let driver = spawn_executor(0, cpus[0], &cfg, move || async move {
        let tx = to_b.connect().await;
        let rx = from_b.connect().await;
        let start = Instant::now();
        let mut sent = 0;
        while sent < window.min(n) {
            tx.send(sent).await.unwrap();
            sent += 1;
        }
        for _ in 0..n {
            rx.recv().await.unwrap();
            if sent < n {
                tx.send(sent).await.unwrap();
                sent += 1;
            }
        }
        start.elapsed().as_secs_f64()
    })
    .unwrap();
    let secs = driver.join().unwrap();
    echo.join().unwrap();
    secs
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    for window in [1, 16] {
        for round in 0..3 {
            let a = crossbeam_mailbox(n, window);
            let b = glommio_channels(n, window);
            println!(
                "window {window:2} round {round}: crossbeam mailbox {:>9.0} rt/s ({:5.2} us)  glommio shared_channel {:>9.0} rt/s ({:5.2} us)",
                n as f64 / a,
                a * 1e6 / n as f64,
                n as f64 / b,
                b * 1e6 / n as f64
            );
        }
    }
}
