//! Stock Redis Cluster clients against three real `tesserad --cluster` processes (client ports
//! 26000-26002, cluster ports 26100-26102): `redis-cli -c` follows `-MOVED` to keys on other
//! nodes, and redis-py's `RedisCluster` (tests/cluster_clients.py) runs set/get, cross-slot
//! `mget_nonatomic`, a pipeline, TTLs and a cross-slot delete. Needs `redis-cli` and a python3
//! with `redis.cluster` (Debian's python3-redis; tools/test.sh installs both).

use std::collections::HashSet;
use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use redis::Value;

const TESSERAD: &str = env!("CARGO_BIN_EXE_tesserad");
const PY_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster_clients.py");

/// A tesserad process, killed (SIGKILL) when dropped, so a failed assertion stops it too.
struct Proc {
    child: Child,
    port: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "tessera-cluster-clients-{}.toml",
        std::process::id()
    ));
    std::fs::write(
        &path,
        // Tolerant failure detection: a loaded debug build must not lose a node falsely.
        "[cluster]\nmember_count_quorum = 3\nprobe_period_ms = 500\nprobe_rtt_ms = 300\n\
         suspect_to_down_ms = 5000\nseed_retry_ms = 200\ndown_announce_ms = 1000\n\
         first_plan_delay_ms = 600\nreplan_interval_ms = 100\nepoch_hint_interval_ms = 200\n",
    )
    .unwrap();
    path
}

fn start(config: &std::path::Path, i: u16) -> Proc {
    let (port, cport) = (26000 + i, 26100 + i);
    let log = std::env::temp_dir().join(format!("tessera-cluster-clients-node{i}.log"));
    let stderr = std::fs::File::create(log).map_or_else(|_| Stdio::null(), Stdio::from);
    let child = Command::new(TESSERAD)
        .args(["--bind", "127.0.0.1", "--cores", "1", "--cluster"])
        .args(["--log-level", "warn", "--port", &port.to_string()])
        .args(["--cluster-port", &cport.to_string()])
        .args(["--seeds", "127.0.0.1:26100", "--cluster-secret", "clients"])
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("tesserad starts");
    Proc { child, port }
}

fn conn(port: u16) -> Option<redis::Connection> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let con = c.get_connection_with_timeout(Duration::from_secs(2)).ok()?;
    con.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    Some(con)
}

/// `(epoch, primary node ids, any slot migrating)` of one node's routing table.
fn table(port: u16) -> Option<(i64, HashSet<Vec<u8>>, bool)> {
    let v: Value = redis::cmd("CLUSTER.ROUTINGTABLE")
        .query(&mut conn(port)?)
        .ok()?;
    let Value::Array(top) = v else { return None };
    let Value::Int(epoch) = top.get(1)? else {
        return None;
    };
    let Value::Array(ranges) = top.get(5)? else {
        return None;
    };
    let mut owners = HashSet::new();
    let mut moving = false;
    for r in ranges {
        let Value::Array(f) = r else { return None };
        if let Value::BulkString(id) = f.get(5)? {
            owners.insert(id.clone());
        }
        moving |= f.get(11)? != &Value::Nil;
    }
    Some((*epoch, owners, moving))
}

/// Waits (bounded) until all nodes agree on a table with 3 primaries and no migration.
fn wait_stable(ports: &[u16], secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let tables: Vec<_> = ports.iter().map(|p| table(*p)).collect();
        if let Some(Some(first)) = tables.first() {
            let agree = tables.iter().all(|t| t.as_ref() == Some(first));
            if agree && first.0 >= 1 && first.1.len() == 3 && !first.2 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not stable within {secs} s: {tables:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `redis-cli -c -p port args...` (stdin from `input` when given).
fn redis_cli(port: u16, args: &[&str], input: Option<&str>) -> Output {
    let mut child = Command::new("redis-cli")
        .args(["-c", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli runs (tools/test.sh installs redis-tools)");
    if let Some(text) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A python3 that can import `redis.cluster`: the one on PATH, else Debian's.
fn python_with_redis() -> String {
    for py in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(py)
            .args(["-c", "import redis.cluster"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return py.to_string();
        }
    }
    panic!("no python3 with redis.cluster (apt-get install python3-redis; tools/test.sh does)");
}

#[test]
fn redis_cli_and_redis_py_cluster_clients_work() {
    let python = python_with_redis();
    let cfg = config_file();
    let procs: Vec<Proc> = (0..3).map(|i| start(&cfg, i)).collect();
    let ports: Vec<u16> = procs.iter().map(|p| p.port).collect();
    wait_stable(&ports, 90);
    let p0 = ports[0];

    // Keys node 0 does not own: a plain (non-cluster) GET there answers -MOVED.
    let mut plain = conn(p0).unwrap();
    let remote: Vec<String> = (0..60)
        .map(|i| format!("cli:{i}"))
        .filter(|k| {
            let r: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(k).query(&mut plain);
            matches!(&r, Err(e) if e.code() == Some("MOVED"))
        })
        .collect();
    assert!(
        remote.len() >= 10,
        "with 3 nodes about 2/3 of keys live elsewhere: {remote:?}"
    );

    // redis-cli -c: one command per process, each redirected and followed.
    for k in &remote {
        let v = format!("val-{k}");
        let out = redis_cli(p0, &["SET", k, &v, "EX", "300"], None);
        assert_eq!(stdout(&out).trim(), "OK", "SET {k}: {out:?}");
        let out = redis_cli(p0, &["GET", k], None);
        assert_eq!(stdout(&out).trim(), v, "GET {k}: {out:?}");
        let ttl: i64 = stdout(&redis_cli(p0, &["TTL", k], None))
            .trim()
            .parse()
            .unwrap();
        assert!((290..=300).contains(&ttl), "TTL {k}: {ttl}");
    }
    // The value really is on another node: node 0 still redirects a plain client.
    let r: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(&remote[0]).query(&mut plain);
    assert_eq!(r.unwrap_err().code(), Some("MOVED"));

    // redis-cli -c reading commands from stdin: one session hopping between nodes.
    let script: String = remote
        .iter()
        .flat_map(|k| [format!("INCR ctr:{k}\n"), format!("GET {k}\n")])
        .collect();
    let out = stdout(&redis_cli(p0, &[], Some(&script)));
    // redis-cli prints "-> Redirected to slot [S] located at HOST:PORT" on each hop.
    let hops = out
        .lines()
        .filter(|l| l.starts_with("-> Redirected"))
        .count();
    assert!(hops >= remote.len(), "the session follows redirects: {out}");
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("-> Redirected"))
        .collect();
    let want: Vec<String> = remote
        .iter()
        .flat_map(|k| ["1".to_string(), format!("val-{k}")])
        .collect();
    assert_eq!(lines, want, "redis-cli -c session output");

    // redis-py RedisCluster.
    let out = Command::new(&python)
        .arg(PY_SCRIPT)
        .arg(p0.to_string())
        .output()
        .unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "redis-py script failed: {}\nstdout: {so}\nstderr: {se}",
        out.status
    );
    assert!(so.contains("redis-py cluster ok"), "stdout: {so}");
    eprintln!("{}", so.trim());
    drop(procs);
    let _ = std::fs::remove_file(cfg);
}
