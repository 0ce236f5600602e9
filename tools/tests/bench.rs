//! End-to-end tests of the `tessera-bench` binary against a real `tesserad` (and a real
//! redis-server for compare mode, skipped with a message when it is not installed). Each test
//! starts its servers on free loopback ports and kills them on drop, also on panic.
//!
//! Runs are short (about a second each), over a small preloaded key space; the checks are on
//! what the JSON reports (requests, errors, hits, ordered percentiles, cross-core counters),
//! never on speed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_tessera-bench");
const TESSERAD: &str = env!("CARGO_BIN_EXE_tesserad");
/// Longest a server may take to answer PING after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest one `tessera-bench` invocation may take (its runs are about a second each).
const BENCH_TIMEOUT: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tessera-bench-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server child process, killed by pid on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// Spawns `program args... <port args>` on a free port until one answers PING.
    fn start(program: &str, args: &[&str], port_args: impl Fn(u16) -> Vec<String>) -> Server {
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(program)
                .args(args)
                .args(port_args(port))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
            let mut s = Server { child, port };
            if s.wait_ready() {
                return s;
            }
            // Probably lost the port to another process: drop kills it, try another.
        }
        panic!("{program} did not start on any of 5 ports");
    }

    fn tesserad(extra: &[&str]) -> Server {
        Server::start(TESSERAD, extra, |p| {
            vec![
                "--bind".into(),
                "127.0.0.1".into(),
                "--port".into(),
                p.to_string(),
                "--log-level".into(),
                "warn".into(),
            ]
        })
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 7];
                // `-NOAUTH` when a password is set: still a live server.
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && (&buf == b"+PONG\r\n" || &buf == b"-NOAUTH")
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tessera-bench args...` (bounded by [`BENCH_TIMEOUT`]) and returns its stdout;
/// panics with its stderr when it fails.
fn bench(args: &[&str]) -> String {
    let mut child = Command::new(BENCH)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tessera-bench");
    let deadline = Instant::now() + BENCH_TIMEOUT;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tessera-bench {args:?} ran longer than {BENCH_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tessera-bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `tessera-bench args...`, which must fail; returns its stderr.
fn bench_fails(args: &[&str]) -> String {
    let out = Command::new(BENCH)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tessera-bench");
    assert!(!out.status.success(), "tessera-bench {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An integer field (counts).
fn int(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// The summary row of `command` in a run's JSON.
fn row<'a>(doc: &'a Value, command: &str) -> &'a Value {
    doc["summary"]
        .as_array()
        .expect("summary")
        .iter()
        .find(|r| r["command"] == command)
        .unwrap_or_else(|| panic!("no {command} row in {}", doc["summary"]))
}

fn assert_ordered(latency: &Value) {
    let p: Vec<f64> = [
        "p50_us", "p90_us", "p99_us", "p999_us", "p9999_us", "max_us",
    ]
    .iter()
    .map(|k| num(latency, k))
    .collect();
    assert!(p[0] > 0.0, "p50 is positive: {latency}");
    assert!(
        p.windows(2).all(|w| w[0] <= w[1]),
        "percentiles are ordered: {latency}"
    );
}

/// A run's JSON shows completed requests, no errors, every GET a hit after the preload, and
/// ordered percentiles.
fn check_clean_run(doc: &Value, what: &str) {
    let all = row(doc, "ALL");
    assert!(int(all, "count") > 0, "{what}: requests completed");
    assert_eq!(int(all, "errors"), 0, "{what}: no error replies");
    let get = row(doc, "GET");
    assert!(int(get, "count") > 0, "{what}: GETs completed");
    assert_eq!(
        int(get, "miss"),
        0,
        "{what}: every GET hits after the preload"
    );
    assert_eq!(int(get, "ok"), int(get, "count"), "{what}");
    assert_eq!(int(doc, "unfinished"), 0, "{what}: every request answered");
    assert_ordered(&all["latency"]);
    assert_ordered(&get["latency"]);
}

#[test]
fn closed_and_open_loop_against_tesserad() {
    let server = Server::tesserad(&["--cores", "2"]);
    let dir = TempDir::new("runs");
    let addr = server.addr();
    let common = [
        "-c",
        "8",
        "--workers",
        "2",
        "--no-pin",
        "-w",
        "200ms",
        "-d",
        "1s",
        "--keys",
        "2000",
        "--preload",
        "2000",
        "--mix",
        "get=9,set=1",
        "--no-progress",
    ];

    let closed = dir.path("closed.json");
    let mut args = vec!["run", "-t", &addr, "-P", "4"];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["--json", closed.to_str().unwrap()]);
    let out = bench(&args);
    assert!(out.contains("GET") && out.contains("ALL"), "{out}");
    let doc = json(&closed);
    check_clean_run(&doc, "closed loop");
    assert_eq!(doc["config"]["load"], "Closed");

    // Open loop at a rate any build sustains: the achieved rate is close to the target.
    let open = dir.path("open.json");
    let mut args = vec!["run", "-t", &addr, "-P", "1", "--rate", "1000"];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["--arrival", "poisson", "--json", open.to_str().unwrap()]);
    bench(&args);
    let doc = json(&open);
    check_clean_run(&doc, "open loop");
    assert!(
        doc["config"]["load"]["Open"].is_object(),
        "{}",
        doc["config"]
    );
    let count = int(row(&doc, "ALL"), "count") + int(&doc, "unsent");
    assert!(
        (500..2000).contains(&count),
        "about 1000 requests intended in 1 s at 1000/s: {count}"
    );
}

#[test]
fn owner_routing_avoids_cross_core_hops_on_tesserad() {
    let server = Server::tesserad(&["--cores", "2"]);
    let dir = TempDir::new("route");
    let addr = server.addr();
    let owner = format!("owner={addr}?route=owner");
    let uniform = format!("uniform={addr}");
    let pid = server.pid();
    let pids = format!("{pid},{pid}");
    let path = dir.path("p5.json");
    #[rustfmt::skip]
    let out = bench(&[
        "compare", "-t", &owner, "-t", &uniform, "--server-pid", &pids, "--rounds", "2",
        "-c", "8", "-P", "4", "--workers", "2", "--no-pin", "-w", "100ms", "-d", "700ms",
        "--keys", "2000", "--preload", "2000", "--mix", "get=9,set=1", "--no-progress",
        "--json", path.to_str().unwrap(),
    ]);
    assert!(out.contains("cross-core"), "{out}");
    let doc = json(&path);
    let t = doc["targets"].as_array().expect("targets");
    assert_eq!(t.len(), 2);
    for s in t {
        assert_eq!(int(s, "errors"), 0, "{s}");
        assert!((num(s, "read_hit_ratio") - 1.0).abs() < 1e-12, "{s}");
        assert!(num(&s["server_cpu_per_op_us"], "median") > 0.0, "{s}");
    }
    // The server's own counters: owner-routed requests stay on their core, uniform keys
    // cross in about half the cases (two cores).
    let owner_hops = num(&t[0]["cross_core"], "max");
    let uniform_hops = num(&t[1]["cross_core"], "min");
    assert!(
        owner_hops < 0.02,
        "owner-routed cross-core fraction {owner_hops}"
    );
    assert!(
        (0.3..0.7).contains(&uniform_hops),
        "uniform cross-core fraction {uniform_hops}"
    );
}

#[test]
fn error_replies_are_counted_as_errors() {
    // Every command is refused with -NOAUTH: the run must report errors, not successes.
    let server = Server::tesserad(&["--cores", "1", "--requirepass", "sesame"]);
    let dir = TempDir::new("errors");
    let path = dir.path("errors.json");
    #[rustfmt::skip]
    bench(&[
        "run", "-t", &server.addr(), "-c", "2", "--workers", "1", "--no-pin", "-w", "0s",
        "-d", "500ms", "--keys", "100", "--mix", "get=1,set=1", "--no-progress",
        "--json", path.to_str().unwrap(),
    ]);
    let doc = json(&path);
    let all = row(&doc, "ALL");
    assert!(int(all, "count") > 0);
    assert_eq!(int(all, "errors"), int(all, "count"), "{all}");
    assert_eq!(int(all, "ok"), 0);
}

#[test]
fn compare_tesserad_with_redis() {
    let have_redis = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !have_redis {
        eprintln!("SKIPPED: redis-server is not installed");
        return;
    }
    let tessera = Server::tesserad(&["--cores", "2"]);
    let redis = Server::start(
        "redis-server",
        &["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        |p| vec!["--port".into(), p.to_string()],
    );
    let dir = TempDir::new("compare");
    let path = dir.path("compare.json");
    let t1 = format!("tessera={}", tessera.addr());
    let t2 = format!("redis={}", redis.addr());
    let pids = format!("{},{}", tessera.pid(), redis.pid());
    #[rustfmt::skip]
    let out = bench(&[
        "compare", "-t", &t1, "-t", &t2, "--server-pid", &pids, "--rounds", "2",
        "-c", "4", "-P", "4", "--workers", "2", "--no-pin", "-w", "100ms", "-d", "700ms",
        "--keys", "1000", "--preload", "1000", "--mix", "get=9,set=1", "--no-progress",
        "--json", path.to_str().unwrap(),
    ]);
    assert!(
        out.contains("| tessera |") && out.contains("| redis |"),
        "{out}"
    );
    let doc = json(&path);
    let rounds: Vec<u64> = doc["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .map(|r| r["target"].as_u64().unwrap())
        .collect();
    assert_eq!(rounds, vec![0, 1, 0, 1], "alternating rounds A B A B");
    let t = doc["targets"].as_array().expect("targets");
    for s in t {
        assert!(num(&s["throughput"], "median") > 0.0, "{s}");
        assert_eq!(int(s, "errors"), 0, "{s}");
        assert!((num(s, "read_hit_ratio") - 1.0).abs() < 1e-12, "{s}");
        assert!(num(&s["p50_us"], "median") <= num(&s["p99_us"], "median"));
        assert!(s["server_rss_bytes"].as_u64().unwrap() > 0, "{s}");
    }
    // tesserad reports its cross-core counters; redis has none.
    assert!(t[0]["cross_core"].is_object(), "{}", t[0]);
    assert!(t[1]["cross_core"].is_null(), "{}", t[1]);

    // Redis does not say which core serves a connection: owner routing refuses to start.
    let owner = format!("{}?route=owner", redis.addr());
    #[rustfmt::skip]
    let err = bench_fails(&[
        "run", "-t", &owner, "-c", "1", "-w", "0s", "-d", "200ms", "--no-progress",
        "--mix", "get=1",
    ]);
    assert!(err.contains("route=owner needs"), "{err}");
}

#[test]
fn memory_mode_loads_what_it_reports() {
    let server = Server::tesserad(&["--cores", "2"]);
    let dir = TempDir::new("memory");
    let path = dir.path("memory.json");
    #[rustfmt::skip]
    let out = bench(&[
        "memory", "-t", &server.addr(), "--server-pid", &server.pid(), "--keys", "5000",
        "-v", "16", "-c", "4", "-P", "16", "--workers", "1", "--no-pin", "--no-progress",
        "--json", path.to_str().unwrap(),
    ]);
    assert!(out.contains("bytes/item"), "{out}");
    let doc = json(&path);
    let r = &doc["results"][0];
    assert_eq!(int(r, "keys"), 5000);
    assert_eq!(int(r, "items_reported"), 5000, "DBSIZE after the load: {r}");
    assert!(int(r, "rss_after") > 0, "{r}");
}

/// Sends one command and returns its bulk-string reply as text (`None` on any failure).
fn bulk_command(port: u16, args: &[&str]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req: String = std::iter::once(format!("*{}\r\n", args.len()))
        .chain(args.iter().map(|a| format!("${}\r\n{a}\r\n", a.len())))
        .collect();
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") {
            let head = std::str::from_utf8(&buf[..eol]).ok()?;
            if let Some(n) = head.strip_prefix(':') {
                return Some(n.to_string());
            }
            let len: usize = head.strip_prefix('$')?.parse().ok()?;
            if buf.len() >= eol + 2 + len + 2 {
                return Some(String::from_utf8_lossy(&buf[eol + 2..eol + 2 + len]).into_owned());
            }
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `name:value` of a `CLUSTER INFO` text.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
}

/// Starts a 3-node `tesserad --cluster` on ports 22500.. (clients) and 22520.. (peers), and
/// waits (bounded) until every node reports the same settled table: state ok, all slots
/// assigned, 3 known nodes and 3 primaries, one epoch.
fn start_cluster() -> Vec<Server> {
    const NODES: u16 = 3;
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let port = 22500 + i;
        let child = Command::new(TESSERAD)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--cores", "1", "--log-level", "warn", "--cluster"])
            .args(["--cluster-port", &(22520 + i).to_string()])
            .args([
                "--seeds",
                "127.0.0.1:22520",
                "--cluster-secret",
                "bench-test-secret",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tesserad --cluster");
        let mut s = Server { child, port };
        assert!(s.wait_ready(), "cluster node {i} did not answer PING");
        nodes.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last: Vec<String> = nodes
            .iter()
            .map(|n| bulk_command(n.port, &["CLUSTER", "INFO"]).unwrap_or_default())
            .collect();
        let settled = last.iter().all(|i| {
            info_field(i, "cluster_state") == Some("ok")
                && info_field(i, "cluster_slots_assigned") == Some("16384")
                && info_field(i, "cluster_known_nodes") == Some("3")
                && info_field(i, "cluster_size") == Some("3")
        });
        let epochs: Vec<_> = last
            .iter()
            .map(|i| info_field(i, "cluster_current_epoch"))
            .collect();
        if settled && epochs.windows(2).all(|w| w[0] == w[1]) {
            return nodes;
        }
        assert!(
            Instant::now() < deadline,
            "cluster did not settle in 60 s: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cluster_mode_routes_every_key_to_its_master() {
    let nodes = start_cluster();
    let dir = TempDir::new("cluster");
    let path = dir.path("cluster.json");
    let target = format!("c={}?route=cluster", nodes[0].addr());
    #[rustfmt::skip]
    let out = bench(&[
        "run", "-t", &target, "-c", "6", "-P", "4", "--workers", "2", "--no-pin",
        "-w", "200ms", "-d", "1s", "--keys", "3000", "--preload", "3000",
        "--mix", "get=9,set=1", "--no-progress", "--json", path.to_str().unwrap(),
    ]);
    assert!(out.contains("ALL"), "{out}");
    let doc = json(&path);
    // No -MOVED/-ASK (they would be errors) and every GET hits the preloaded keys.
    check_clean_run(&doc, "cluster mode");
    assert_eq!(int(row(&doc, "ALL"), "redirects"), 0, "no -MOVED/-ASK");
    // The preload put every key on its owner: each node holds a share, together all of them.
    let sizes: Vec<u64> = nodes
        .iter()
        .map(|n| {
            bulk_command(n.port, &["DBSIZE"])
                .and_then(|s| s.parse().ok())
                .expect("DBSIZE")
        })
        .collect();
    assert_eq!(sizes.iter().sum::<u64>(), 3000, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n > 500), "{sizes:?}");

    // The same load without cluster routing: about 2/3 of the keys belong to other nodes and
    // come back as -MOVED, which the harness counts as errors (so the zero above means
    // something).
    let plain = dir.path("plain.json");
    let addr = nodes[0].addr();
    #[rustfmt::skip]
    bench(&[
        "run", "-t", &addr, "-c", "2", "--workers", "1", "--no-pin", "-w", "0s", "-d", "500ms",
        "--keys", "3000", "--mix", "get=1", "--no-progress", "--json", plain.to_str().unwrap(),
    ]);
    let get = row(&json(&plain), "GET").clone();
    let (count, errors) = (int(&get, "count"), int(&get, "errors"));
    assert!(
        count > 0 && errors * 2 > count,
        "most unrouted GETs are redirected: {errors} errors of {count}"
    );
    assert_eq!(int(&get, "redirects"), errors, "every error is a -MOVED");
}

#[test]
fn cluster_mode_without_cluster_support_is_a_clear_error() {
    // A server that answers every command as a Redis without cluster support does.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = [0u8; 1024];
            if matches!(s.read(&mut buf), Ok(n) if n > 0) {
                let _ = s.write_all(b"-ERR This instance has cluster support disabled\r\n");
            }
        }
    });
    let target = format!("{addr}?route=cluster");
    let err = bench_fails(&["run", "-t", &target, "-d", "1s", "--no-progress"]);
    assert!(
        err.contains("CLUSTER SLOTS") && err.contains("cluster support disabled"),
        "{err}"
    );
    fake.join().unwrap();
}
