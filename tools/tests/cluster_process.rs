//! Process-level cluster tests: real `tesserad` processes on 127.0.0.1 (client ports
//! 24500-24509, cluster ports 24600-24609), driven with the redis crate's cluster client.
//! A 4th node joins and one leaves on SIGTERM with nothing lost; `kill -9` of a node is
//! detected and the others keep serving their slots.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::{Commands, Value};

const TESSERAD: &str = env!("CARGO_BIN_EXE_tesserad");

/// A tesserad process, killed (SIGKILL) when dropped.
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

fn config_file(tag: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("tessera-{tag}-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        // Failure detection tolerant of a loaded debug build (a node falsely declared down
        // leaves the cluster): about 5.5 s to detect a dead node.
        "[cluster]\nmember_count_quorum = 3\nprobe_period_ms = 500\nprobe_rtt_ms = 300\n\
         suspect_to_down_ms = 5000\nseed_retry_ms = 200\ndown_announce_ms = 1000\n\
         first_plan_delay_ms = 600\nreplan_interval_ms = 100\nepoch_hint_interval_ms = 200\n",
    )
    .unwrap();
    path
}

/// Each node's log, kept in the temp dir for a failed run.
fn log_file(i: u16) -> Stdio {
    let path = std::env::temp_dir().join(format!("tessera-cluster-process-node{i}.log"));
    std::fs::File::create(path).map_or_else(|_| Stdio::null(), Stdio::from)
}

fn start(config: &std::path::Path, i: u16) -> Proc {
    let (port, cport) = (24500 + i, 24600 + i);
    let child = Command::new(TESSERAD)
        .args([
            "--bind",
            "127.0.0.1",
            "--cores",
            "1",
            "--cluster",
            "--log-level",
            "warn",
        ])
        .args([
            "--port",
            &port.to_string(),
            "--cluster-port",
            &cport.to_string(),
        ])
        .args([
            "--seeds",
            "127.0.0.1:24600",
            "--cluster-secret",
            "process test secret",
        ])
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log_file(i))
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

/// Waits (bounded) until the nodes on `ports` agree on a table with `owners` primaries and no
/// migration, running `work` between checks.
fn wait_stable(ports: &[u16], owners: usize, secs: u64, mut work: impl FnMut()) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        work();
        let tables: Vec<_> = ports.iter().map(|p| table(*p)).collect();
        if let Some(Some(first)) = tables.first() {
            let agree = tables.iter().all(|t| t.as_ref() == Some(first));
            if agree && first.0 >= 1 && first.1.len() == owners && !first.2 {
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

fn cluster_client(ports: &[u16]) -> redis::cluster::ClusterConnection {
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}/"))
        .collect();
    redis::cluster::ClusterClientBuilder::new(urls)
        .connection_timeout(Duration::from_secs(5))
        .response_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get_connection()
        .unwrap()
}

#[test]
fn processes_join_leave_on_sigterm_and_survive_kill_9() {
    let cfg = config_file("cluster-process");
    let mut procs: Vec<Proc> = (0..3).map(|i| start(&cfg, i)).collect();
    let ports = |procs: &[Proc]| procs.iter().map(|p| p.port).collect::<Vec<_>>();
    wait_stable(&ports(&procs), 3, 60, || {});

    let mut con = cluster_client(&ports(&procs));
    let mut keys = Vec::new();
    for i in 0..20_000 {
        let (k, v) = (format!("key:{i}"), format!("value:{i}"));
        let _: () = con.set_ex(&k, &v, 1000).unwrap();
        keys.push((k, v));
    }
    // A 4th process joins while writes go on.
    procs.push(start(&cfg, 3));
    let mut n = 0;
    // A drained node exits by itself: a client whose slot map still names it meets a refused
    // connection (the redis crate's sync cluster client does not refresh on that), so a failed
    // write is retried (bounded) with a fresh client on the live nodes.
    let mut write = |con: &mut redis::cluster::ClusterConnection,
                     keys: &mut Vec<(String, String)>,
                     live: &[u16]| {
        for _ in 0..20 {
            let (k, v) = (format!("w:{n}"), format!("v{n}"));
            let mut tries = 0;
            while let Err(e) = con.set::<_, _, ()>(&k, &v) {
                tries += 1;
                assert!(tries < 50, "write {k} keeps failing: {e}");
                std::thread::sleep(Duration::from_millis(50));
                *con = cluster_client(live);
            }
            keys.push((k, v));
            n += 1;
        }
    };
    let live = ports(&procs);
    wait_stable(&live, 4, 120, || write(&mut con, &mut keys, &live));

    // Node 1 gets SIGTERM: it drains its slots, then exits by itself.
    let leaver = procs.remove(1);
    let pid = leaver.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut leaver = leaver;
    let deadline = Instant::now() + Duration::from_secs(120);
    let live = ports(&procs);
    let mut con = cluster_client(&live);
    loop {
        if let Some(status) = leaver.child.try_wait().unwrap() {
            assert!(status.success(), "drained node exits cleanly: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "SIGTERM drain did not finish");
        write(&mut con, &mut keys, &live);
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(leaver);
    wait_stable(&ports(&procs), 3, 60, || {});
    let mut con = cluster_client(&ports(&procs));
    for (k, v) in &keys {
        let got: Option<String> = con.get(k).unwrap();
        assert_eq!(
            got.as_deref(),
            Some(v.as_str()),
            "key {k} survives join and leave"
        );
    }
    for i in (0..20_000).step_by(211) {
        let ttl: i64 = con.ttl(format!("key:{i}")).unwrap();
        assert!((800..=1000).contains(&ttl), "TTL kept: {ttl}");
    }

    // kill -9 of a node: the others detect it and keep serving. Its keys are lost (no
    // replication yet); every other key stays, and every slot takes writes again. Quorum 3
    // of 3 would stop writes, so one more node joins first.
    procs.push(start(&cfg, 4));
    wait_stable(&ports(&procs), 4, 120, || {});
    let victim = procs.remove(0);
    let victim_port = victim.port;
    let victim_keys: i64 = redis::cmd("DBSIZE")
        .query(&mut conn(victim_port).unwrap())
        .unwrap();
    drop(victim); // SIGKILL
    let started = Instant::now();
    wait_stable(&ports(&procs), 3, 60, || {});
    let detect_s = started.elapsed().as_secs_f64();
    assert!(detect_s < 30.0, "detection took {detect_s} s");
    let mut con = cluster_client(&ports(&procs));
    let mut kept = 0;
    for (k, v) in &keys {
        if let Some(got) = con.get::<_, Option<String>>(k).unwrap() {
            assert_eq!(&got, v, "a surviving key keeps its value");
            kept += 1;
        }
    }
    assert_eq!(
        (keys.len() - kept) as i64,
        victim_keys,
        "exactly the killed node's keys are lost"
    );
    eprintln!("kill -9 detected and replanned in {detect_s:.1} s; {kept} keys kept");
    for i in 0..2000 {
        let _: () = con.set(format!("after:{i}"), i).unwrap();
    }
    assert!(conn(victim_port).is_none(), "the victim is gone");
    let _ = std::fs::remove_file(cfg);
}
