//! End-to-end runs of the harness: against a small in-test RESP server (which can stall on
//! purpose, to check coordinated-omission correction), and against real redis-server and
//! memcached when they are installed (skipped with a message otherwise). Every server is on
//! 127.0.0.1, started by the test and stopped by a Drop guard, also on panic.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tessera_bench::codec::Protocol;
use tessera_bench::resp;
use tessera_bench::runner::{self, LoadModel, Pinning, RunConfig, Target};
use tessera_bench::schedule::Arrival;
use tessera_bench::stats::read_interval_log;
use tessera_bench::workload::{parse_mix, KeyDist, OpKind, Workload, Ycsb};

/// A minimal RESP server: `+OK` to writes, a bulk value to GET (nil for keys ending in 7),
/// `:1` to INCR/DEL. Command number `stall_at` (1-based, over all connections) is answered
/// only after `stall` has passed.
struct FakeServer {
    addr: String,
    /// Commands received so far.
    seen: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FakeServer {
    fn start(stall_at: u64, stall: Duration) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU64::new(0));
        let stop2 = stop.clone();
        let seen_out = seen.clone();
        let accept = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (stop3, seen3) = (stop2.clone(), seen.clone());
                        conns.push(std::thread::spawn(move || {
                            serve(s, &stop3, &seen3, stall_at, stall);
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        FakeServer {
            addr,
            seen: seen_out,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(mut s: TcpStream, stop: &AtomicBool, seen: &AtomicU64, stall_at: u64, stall: Duration) {
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
        let mut out = Vec::new();
        let mut pos = 0;
        while let Ok(Some((_, used))) = resp::parse_reply(&buf[pos..]) {
            let frame = &buf[pos..pos + used];
            pos += used;
            // `*n\r\n$len\r\nNAME\r\n$len\r\nKEY\r\n...`
            let mut lines = frame.split(|&b| b == b'\n');
            let name = lines
                .nth(2)
                .unwrap_or(b"")
                .trim_ascii()
                .to_ascii_uppercase();
            let key = lines.nth(1).unwrap_or(b"").trim_ascii().to_vec();
            if seen.fetch_add(1, Ordering::Relaxed) + 1 == stall_at {
                s.write_all(&out).unwrap_or(());
                out.clear();
                std::thread::sleep(stall);
            }
            match name.as_slice() {
                b"GET" if key.ends_with(b"7") => out.extend_from_slice(b"$-1\r\n"),
                b"GET" => out.extend_from_slice(b"$5\r\nhello\r\n"),
                b"INCR" | b"DEL" => out.extend_from_slice(b":1\r\n"),
                b"MGET" => out.extend_from_slice(b"*1\r\n$1\r\nx\r\n"),
                _ => out.extend_from_slice(b"+OK\r\n"),
            }
        }
        buf.drain(..pos);
        if s.write_all(&out).is_err() {
            return;
        }
    }
}

fn config(target: &str, protocol: &str) -> RunConfig {
    RunConfig {
        targets: vec![format!("{protocol}://{target}").parse::<Target>().unwrap()],
        workload: Workload {
            keys: 1000,
            ..Workload::default()
        },
        connections: 4,
        pipeline: 4,
        workers: 2,
        pinning: Pinning::None,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(20),
        requests: Some(4000),
        interval: Duration::from_millis(200),
        ..RunConfig::default()
    }
}

#[test]
fn closed_loop_against_fake_server_counts_every_request() {
    let server = FakeServer::start(0, Duration::ZERO);
    let mut cfg = config(&server.addr, "resp");
    cfg.workload.mix = parse_mix("get=2,set=1,incr=1,del=1,scan=1").unwrap();
    let mut log = Vec::new();
    let out = runner::run(&cfg, Some(&mut log)).unwrap();
    assert_eq!(out.stats.count(), 4000, "exactly the requested count");
    for k in [
        OpKind::Get,
        OpKind::Set,
        OpKind::Incr,
        OpKind::Del,
        OpKind::Scan,
    ] {
        let s = out.stats.get(k).unwrap_or_else(|| panic!("{k} missing"));
        assert_eq!(s.errors, 0);
        assert!(s.count() > 300, "{k}: {}", s.count());
    }
    // Keys ending in 7 are misses, about 10% of GETs.
    let get = out.stats.get(OpKind::Get).unwrap();
    assert!(get.miss > 0 && get.miss < get.count() / 4);
    // The interval log holds every completed request exactly once.
    let logged: u64 = read_interval_log(&log)
        .unwrap()
        .iter()
        .map(|i| i.histogram.len())
        .sum();
    assert_eq!(logged, 4000);
    let points: u64 = out.intervals.iter().map(|p| p.count).sum();
    assert_eq!(points, 4000);
}

/// The coordinated-omission check: one 100 ms stall at a fixed 1000 requests/s.
#[test]
fn open_loop_charges_a_server_stall_to_the_requests_it_delayed() {
    let stall = Duration::from_millis(100);
    let ms = |n: u64| n * 1_000_000;

    // Open loop: every request intended during the stall waits for it.
    let server = FakeServer::start(300, stall);
    let mut cfg = config(&server.addr, "resp");
    cfg.workload.mix = vec![(OpKind::Get, 1)];
    cfg.connections = 1;
    cfg.workers = 1;
    cfg.pipeline = 1;
    cfg.load = LoadModel::Open {
        rate: 1000.0,
        arrival: Arrival::Uniform,
    };
    cfg.requests = Some(800);
    let open = runner::run(&cfg, None).unwrap();
    drop(server);
    let g = open.stats.get(OpKind::Get).unwrap();
    assert_eq!(g.count(), 800);
    let slow_corrected = g.latency.count_between(ms(50), u64::MAX);
    let slow_service = g.service.count_between(ms(50), u64::MAX);
    // ~50 requests were intended 50+ ms before the stall ended.
    assert!(
        slow_corrected >= 40,
        "corrected: {slow_corrected} samples >= 50 ms"
    );
    assert!(g.latency.value_at_quantile(0.95) >= ms(40));
    assert!(g.latency.max() >= ms(95));
    // Measured from the actual send, the same stall looks like a single slow request.
    assert!(
        slow_service < slow_corrected / 4,
        "service {slow_service} vs corrected {slow_corrected}"
    );

    // Closed loop: the stall is one sample, invisible at p99 - the omission open loop avoids.
    let server = FakeServer::start(300, stall);
    cfg.targets = config(&server.addr, "resp").targets;
    cfg.load = LoadModel::Closed;
    cfg.requests = Some(3000);
    let closed = runner::run(&cfg, None).unwrap();
    let c = closed.stats.get(OpKind::Get).unwrap();
    assert!(c.latency.max() >= ms(95), "the stall is recorded");
    let slow_closed = c.latency.count_between(ms(50), u64::MAX);
    assert!(slow_closed < slow_corrected / 4, "closed {slow_closed}");
}

#[test]
fn warmup_is_excluded_and_the_deadline_bounds_the_run() {
    let server = FakeServer::start(0, Duration::ZERO);
    let mut cfg = config(&server.addr, "resp");
    cfg.connections = 2;
    cfg.load = LoadModel::Open {
        rate: 2000.0,
        arrival: Arrival::Poisson,
    };
    cfg.warmup = Duration::from_millis(300);
    cfg.duration = Duration::from_millis(500);
    cfg.requests = None;
    let t = Instant::now();
    let out = runner::run(&cfg, None).unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    // ~1000 measured requests (500 ms at 2000/s), none of the ~600 warm-up ones.
    let n = out.stats.count();
    assert!((700..=1200).contains(&n), "{n}");
    // A healthy open-loop run sends what was due before the deadline (a stall of the machine
    // in the last milliseconds could leave a few behind, never hundreds).
    assert!(out.unsent < 20, "{}", out.unsent);
}

#[test]
fn replies_after_the_deadline_are_drained_not_dropped() {
    let ms = |n: u64| n * 1_000_000;
    let mut results = Vec::new();
    for drain in [Duration::from_secs(2), Duration::ZERO] {
        // The 20th command is answered after 500 ms, long after the 200 ms deadline.
        let server = FakeServer::start(20, Duration::from_millis(500));
        let mut cfg = config(&server.addr, "resp");
        cfg.connections = 1;
        cfg.workers = 1;
        cfg.pipeline = 1;
        cfg.requests = None;
        cfg.duration = Duration::from_millis(200);
        cfg.drain = drain;
        let out = runner::run(&cfg, None).unwrap();
        let slow = out
            .stats
            .get(OpKind::Get)
            .map_or(0, |g| g.latency.count_between(ms(400), u64::MAX))
            + out
                .stats
                .get(OpKind::Set)
                .map_or(0, |s| s.latency.count_between(ms(400), u64::MAX));
        results.push((slow, out.unfinished));
    }
    assert_eq!(results[0], (1, 0), "drained: the slow reply is recorded");
    assert_eq!(results[1], (0, 1), "no drain: it is reported unanswered");
}

#[test]
fn open_loop_reports_requests_a_stalled_server_kept_from_being_sent() {
    // The 20th request stalls past the 300 ms deadline: with one connection and pipeline 1,
    // the ~280 later requests intended at 1000/s are never sent, and the run says so.
    let server = FakeServer::start(20, Duration::from_millis(600));
    let mut cfg = config(&server.addr, "resp");
    cfg.connections = 1;
    cfg.workers = 1;
    cfg.pipeline = 1;
    cfg.requests = None;
    cfg.duration = Duration::from_millis(300);
    cfg.drain = Duration::ZERO;
    cfg.load = LoadModel::Open {
        rate: 1000.0,
        arrival: Arrival::Uniform,
    };
    let out = runner::run(&cfg, None).unwrap();
    assert_eq!(out.stats.count(), 19);
    assert_eq!(out.unfinished, 1);
    assert!((260..=281).contains(&out.unsent), "{}", out.unsent);
}

#[test]
fn several_targets_in_one_run_share_the_connections() {
    let a = FakeServer::start(0, Duration::ZERO);
    let b = FakeServer::start(0, Duration::ZERO);
    let mut cfg = config(&a.addr, "resp");
    cfg.targets
        .push(format!("resp://{}", b.addr).parse().unwrap());
    let out = runner::run(&cfg, None).unwrap();
    assert_eq!(out.stats.count(), 4000);
    // 4 connections alternate between the two servers, each with the same request budget.
    assert_eq!(a.seen.load(Ordering::Relaxed), 2000);
    assert_eq!(b.seen.load(Ordering::Relaxed), 2000);
}

#[test]
fn preload_writes_dmap_keys_for_dmap_workloads() {
    let server = FakeServer::start(0, Duration::ZERO);
    let mut cfg = config(&server.addr, "resp");
    cfg.workload.mix = parse_mix("dm.get=1").unwrap();
    runner::preload(&cfg, 500).unwrap();
    assert_eq!(server.seen.load(Ordering::Relaxed), 500, "DM.PUT only");
    cfg.workload.mix = parse_mix("dm.get=1,get=1").unwrap();
    runner::preload(&cfg, 500).unwrap();
    assert_eq!(server.seen.load(Ordering::Relaxed), 1500, "SET and DM.PUT");
}

#[test]
fn a_dead_target_is_a_connect_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = config(&format!("127.0.0.1:{port}"), "resp");
    assert!(matches!(
        runner::run(&cfg, None),
        Err(tessera_bench::BenchError::Connect { .. })
    ));
}

/// A server process killed (by pid) when dropped, also when the test panics.
struct ServerGuard {
    child: Child,
    port: u16,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_server(bin: &str, args: impl Fn(u16) -> Vec<String>) -> Option<ServerGuard> {
    if Command::new(bin).arg("--version").output().is_err() {
        println!("SKIPPED: {bin} is not installed (tools/test.sh installs it)");
        return None;
    }
    for _ in 0..5 {
        let port = free_port();
        let child = Command::new(bin)
            .args(args(port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let guard = ServerGuard { child, port };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(guard);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("{bin} did not start");
}

#[test]
fn redis_server_closed_and_open_loop_and_ycsb() {
    let Some(redis) = spawn_server("redis-server", |p| {
        vec![
            "--port".into(),
            p.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
        ]
    }) else {
        return;
    };
    let addr = format!("127.0.0.1:{}", redis.port);
    let mut cfg = config(&addr, "resp");
    cfg.workload.mix = parse_mix("get=5,set=2,incr=1,del=1").unwrap();
    cfg.workload.ttl_ms = Some(60_000);
    runner::preload(&cfg, cfg.workload.keys).unwrap();
    let out = runner::run(&cfg, None).unwrap();
    assert_eq!(out.stats.count(), 4000);
    for (k, s) in out.stats.kinds() {
        assert_eq!(s.errors, 0, "{k}");
    }
    let get = out.stats.get(OpKind::Get).unwrap();
    assert!(
        get.ok > get.miss,
        "preloaded keys are hits: {} / {}",
        get.ok,
        get.miss
    );

    // Open loop with Zipf keys.
    cfg.workload.key_dist = KeyDist::Zipf(0.99);
    cfg.load = LoadModel::Open {
        rate: 4000.0,
        arrival: Arrival::Poisson,
    };
    cfg.requests = Some(1000);
    let out = runner::run(&cfg, None).unwrap();
    assert_eq!(out.stats.count(), 1000);

    // YCSB E (MGET scans) and F (read-modify-write pairs) parse and complete.
    for preset in [Ycsb::E, Ycsb::F] {
        let mut c = config(&addr, "resp");
        c.workload = Workload::ycsb(preset, 1000);
        c.requests = Some(500);
        let out = runner::run(&c, None).unwrap();
        assert_eq!(out.stats.count(), 500, "{preset:?}");
        assert!(out.stats.kinds().all(|(_, s)| s.errors == 0), "{preset:?}");
    }
}

#[test]
fn memcached_closed_loop_with_every_command() {
    let Some(mc) = spawn_server("memcached", |p| {
        vec![
            "-p".into(),
            p.to_string(),
            "-l".into(),
            "127.0.0.1".into(),
            "-U".into(),
            "0".into(),
            "-u".into(),
            "root".into(),
            "-m".into(),
            "64".into(),
        ]
    }) else {
        return;
    };
    let addr = format!("127.0.0.1:{}", mc.port);
    let mut cfg = config(&addr, "memcache");
    assert_eq!(cfg.targets[0].protocol, Protocol::Memcache);
    cfg.workload.mix = parse_mix("get=5,set=2,incr=1,del=1,scan=1,rmw=1").unwrap();
    cfg.workload.ttl_ms = Some(60_000);
    cfg.workload.scan_len_max = 5;
    runner::preload(&cfg, cfg.workload.keys).unwrap();
    let out = runner::run(&cfg, None).unwrap();
    assert_eq!(out.stats.count(), 4000);
    for (k, s) in out.stats.kinds() {
        assert_eq!(s.errors, 0, "{k}");
    }
    let get = out.stats.get(OpKind::Get).unwrap();
    assert!(get.ok > get.miss);
}

#[test]
fn command_line_run_and_compare_write_every_output() {
    let a = FakeServer::start(0, Duration::ZERO);
    let b = FakeServer::start(0, Duration::ZERO);
    let dir = std::env::temp_dir().join(format!("tessera-bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let common = [
        "-c",
        "2",
        "-P",
        "2",
        "--workers",
        "1",
        "--no-pin",
        "-w",
        "0s",
        "-d",
        "5s",
        "-n",
        "300",
        "--keys",
        "100",
        "--preload",
        "100",
        "--no-progress",
        "--interval",
        "100ms",
    ];
    let mut args = vec![
        "tessera-bench".to_string(),
        "run".into(),
        "-t".into(),
        a.addr.clone(),
    ];
    args.extend(common.iter().map(|s| (*s).to_string()));
    args.extend(
        [
            "--json",
            &p("run.json"),
            "--hdr-log",
            &p("run.hlog"),
            "--plot-dir",
            &p("plots"),
        ]
        .iter()
        .map(|s| (*s).to_string()),
    );
    let mut out = Vec::new();
    tessera_bench::cli::main_with_args(args, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("GET") && text.contains("generator CPU"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("run.json")).unwrap()).unwrap();
    let rows = json["summary"].as_array().unwrap();
    assert_eq!(rows.last().unwrap()["command"], "ALL");
    assert_eq!(rows.last().unwrap()["count"], 300);
    let log = std::fs::read(p("run.hlog")).unwrap();
    let logged: u64 = read_interval_log(&log)
        .unwrap()
        .iter()
        .map(|i| i.histogram.len())
        .sum();
    assert_eq!(logged, 300);
    for f in ["plots/latency-percentiles.svg", "plots/timeline.svg"] {
        assert!(
            std::fs::read_to_string(p(f)).unwrap().starts_with("<svg"),
            "{f}"
        );
    }

    let mut args = vec![
        "tessera-bench".to_string(),
        "compare".into(),
        "-t".into(),
        format!("a={}", a.addr),
        "-t".into(),
        format!("b={}", b.addr),
        "--rounds".into(),
        "2".into(),
        "--server-pid".into(),
        format!("{},0", std::process::id()),
    ];
    args.extend(common.iter().map(|s| (*s).to_string()));
    args.extend(
        ["--json", &p("cmp.json"), "--hdr-log-dir", &p("logs")]
            .iter()
            .map(|s| (*s).to_string()),
    );
    let mut out = Vec::new();
    tessera_bench::cli::main_with_args(args, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("| a |") && text.contains("| b |"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("cmp.json")).unwrap()).unwrap();
    let rounds = json["rounds"].as_array().unwrap();
    // Alternating A B A B.
    let order: Vec<u64> = rounds
        .iter()
        .map(|r| r["target"].as_u64().unwrap())
        .collect();
    assert_eq!(order, vec![0, 1, 0, 1]);
    // Target a was given a pid (this process): CPU/op and RSS are reported; b's are not.
    assert!(json["targets"][0]["server_cpu_per_op_us"]["median"]
        .as_f64()
        .is_some());
    assert!(json["targets"][0]["server_rss_bytes"].as_u64().unwrap() > 0);
    assert!(json["targets"][1]["server_cpu_per_op_us"].is_null());
    for f in ["logs/a.round0.hlog", "logs/b.round1.hlog"] {
        let log = std::fs::read(p(f)).unwrap();
        let n: u64 = read_interval_log(&log)
            .unwrap()
            .iter()
            .map(|i| i.histogram.len())
            .sum();
        assert_eq!(n, 300, "{f}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn memory_mode_reports_growth_per_key_of_redis() {
    let Some(redis) = spawn_server("redis-server", |p| {
        vec![
            "--port".into(),
            p.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
        ]
    }) else {
        return;
    };
    let mut cfg = config(&format!("127.0.0.1:{}", redis.port), "resp");
    cfg.workload.value_size = "16".parse().unwrap();
    let rs = tessera_bench::compare::memory(&cfg, &[Some(redis.child.id())], 50_000).unwrap();
    // Redis needs well over 16 bytes per 16-byte value and far less than 10 KB.
    assert!(
        rs[0].bytes_per_item > 16.0 && rs[0].bytes_per_item < 10_000.0,
        "{rs:?}"
    );
}

#[test]
fn idle_mode_measures_a_quiet_server() {
    let Some(redis) = spawn_server("redis-server", |p| {
        vec![
            "--port".into(),
            p.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
        ]
    }) else {
        return;
    };
    let cfg = config(&format!("127.0.0.1:{}", redis.port), "resp");
    let rs = tessera_bench::compare::idle(
        &cfg,
        &[Some(redis.child.id())],
        20,
        Duration::from_millis(500),
    )
    .unwrap();
    assert_eq!(rs.len(), 1);
    assert!(rs[0].seconds >= 0.5);
    // An idle redis (hz 10) uses well under a fifth of a core, whatever the machine's load:
    // this is CPU time, not wall time.
    assert!((0.0..20.0).contains(&rs[0].cpu_percent), "{rs:?}");
}
