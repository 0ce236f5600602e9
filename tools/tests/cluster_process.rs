//! Process-level cluster tests: real `tesserad` processes on 127.0.0.1 (client ports
//! 26200-26209, cluster ports 26300-26309), driven with the redis crate's cluster client.
//! 100k keys are written through it (pipelined); a 4th node joins and one leaves on SIGTERM
//! while a background thread reads and writes, and every acknowledged write keeps its value
//! and TTL; `kill -9` of a node is detected and the others keep serving their slots. A second
//! cluster (nodes 5-9, its own seed) checks `kill -STOP`/`-CONT` of the coordinator while a node
//! joins: the process pause the simulator's `pause_sweep` models.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::cluster::{cluster_pipe, ClusterConnection};
use redis::{Commands, RedisResult, Value};

const TESSERAD: &str = env!("CARGO_BIN_EXE_tesserad");

/// The tests of this binary run one at a time: each starts 5 debug `tesserad` processes that
/// migrate under load, and the machine may have 1 or 2 cores; two clusters at once doubled the
/// load and stretched migration handoffs (`-TRYAGAIN` windows) past the test's retry bound.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one still runs alone.
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

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

/// The nodes' log level: `warn`, or `TESSERA_PROCESS_LOG` (e.g. `info` to see tables,
/// migrations and membership changes of a slow run).
fn log_level() -> String {
    std::env::var("TESSERA_PROCESS_LOG").unwrap_or_else(|_| "warn".into())
}

fn start(config: &std::path::Path, i: u16) -> Proc {
    let (port, cport) = (26200 + i, 26300 + i);
    let child = Command::new(TESSERAD)
        .args([
            "--bind",
            "127.0.0.1",
            "--cores",
            "1",
            "--cluster",
            "--log-level",
            &log_level(),
        ])
        .args([
            "--port",
            &port.to_string(),
            "--cluster-port",
            &cport.to_string(),
        ])
        .args([
            "--seeds",
            // Nodes 0-4 and 5-9 are two clusters; the first three of each are its seeds (any
            // one of them may have left when a later node starts).
            &(0..3)
                .map(|j| format!("127.0.0.1:{}", 26300 + i / 5 * 5 + j))
                .collect::<Vec<_>>()
                .join(","),
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

/// The node id (hex) of the node on `port`.
fn my_id(port: u16) -> Vec<u8> {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut conn(port).unwrap())
        .unwrap()
}

/// The coordinator (node id, hex) that computed the table of the node on `port`.
fn coordinator_of(port: u16) -> Vec<u8> {
    let v: Value = redis::cmd("CLUSTER.ROUTINGTABLE")
        .query(&mut conn(port).unwrap())
        .unwrap();
    match &v {
        Value::Array(top) => match top.get(3) {
            Some(Value::BulkString(id)) => id.clone(),
            _ => panic!("CLUSTER.ROUTINGTABLE: {v:?}"),
        },
        _ => panic!("CLUSTER.ROUTINGTABLE: {v:?}"),
    }
}

/// Keys in the slots the node on `port` owns (CLUSTER SLOTS, then COUNTKEYSINSLOT per slot).
/// Not DBSIZE: a node still drops the keys of slots it handed over (incrementally, in paced
/// turns) after the table is stable, and those keys live on at their new owner.
fn owned_keys(port: u16) -> i64 {
    let mut con = conn(port).unwrap();
    let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut con).unwrap();
    let Value::Array(ranges) = slots else {
        panic!("CLUSTER SLOTS: {slots:?}")
    };
    let mut pipe = redis::pipe();
    for r in &ranges {
        let Value::Array(f) = r else {
            panic!("range {r:?}")
        };
        let (Value::Int(lo), Value::Int(hi), Value::Array(master)) = (&f[0], &f[1], &f[2]) else {
            panic!("range {f:?}")
        };
        if master.get(1) != Some(&Value::Int(i64::from(port))) {
            continue;
        }
        for slot in *lo..=*hi {
            pipe.cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot);
        }
    }
    let counts: Vec<i64> = pipe.query(&mut con).unwrap();
    assert!(!counts.is_empty(), "node {port} owns no slot");
    counts.iter().sum()
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

fn try_cluster_client(ports: &[u16]) -> RedisResult<ClusterConnection> {
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}/"))
        .collect();
    redis::cluster::ClusterClientBuilder::new(urls)
        .connection_timeout(Duration::from_secs(5))
        .response_timeout(Duration::from_secs(10))
        .build()?
        .get_connection()
}

fn cluster_client(ports: &[u16]) -> ClusterConnection {
    try_cluster_client(ports).unwrap()
}

/// How long `retrying` lets requests keep failing. Failures come from migration handoffs
/// (`-TRYAGAIN` while the target verifies its copy) and from a slot map that still names a node
/// that left (refused connections until the client refreshes). 21 runs on 2026-12-01 with the
/// leaver's confirmation (`cluster.leave_confirm_ms`) saw at most 2.7 s; before
/// it, a coordinator that left could strand its last table and clients failed for 5.3 s (the
/// next coordinator's lease wait), and this bound was briefly 20 s.
const FAILING_MAX: Duration = Duration::from_secs(5);

/// Runs `f` until it succeeds (bounded: `FAILING_MAX` of failures). A drained node exits by
/// itself: a client whose slot map still names it meets a refused connection (the redis
/// crate's sync cluster client does not refresh on that), so a failure is retried with a fresh
/// client on `ports` (it skips nodes that refuse). `-MOVED` and `-TRYAGAIN` are retried inside
/// the client itself. A streak of failures over 1 s is printed with its start (Unix time, to
/// find it in the nodes' logs: `TESSERA_PROCESS_LOG=info`) and its first error.
fn retrying<T>(
    ports: &[u16],
    con: &mut ClusterConnection,
    what: &str,
    mut f: impl FnMut(&mut ClusterConnection) -> RedisResult<T>,
) -> T {
    let mut failing: Option<(Instant, std::time::SystemTime, String)> = None;
    loop {
        match f(con) {
            Ok(v) => {
                if let Some((since, wall, first)) = failing {
                    let s = since.elapsed().as_secs_f64();
                    if s > 1.0 {
                        eprintln!(
                            "slow: {what} failed for {s:.1} s (from {:?}; first error: {first})",
                            wall.duration_since(std::time::UNIX_EPOCH)
                                .unwrap_or_default()
                        );
                    }
                }
                return v;
            }
            Err(e) => {
                let (since, ..) = *failing.get_or_insert_with(|| {
                    (Instant::now(), std::time::SystemTime::now(), e.to_string())
                });
                assert!(
                    since.elapsed() < FAILING_MAX,
                    "{what} kept failing for {FAILING_MAX:?}: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
                if let Ok(fresh) = try_cluster_client(ports) {
                    *con = fresh;
                }
            }
        }
    }
}

const BULK: usize = 100_000;
const BULK_TTL: u64 = 1000;
const BG_TTL: u64 = 2000;
const BATCH: usize = 1000;

/// `key:{i}` = `value:{i}` for `i` in `0..BULK`, with TTL `BULK_TTL`, in pipelines of `BATCH`.
fn write_bulk(con: &mut ClusterConnection) {
    for first in (0..BULK).step_by(BATCH) {
        let mut pipe = cluster_pipe();
        for i in first..(first + BATCH).min(BULK) {
            pipe.set_ex(format!("key:{i}"), format!("value:{i}"), BULK_TTL)
                .ignore();
        }
        let () = pipe.query(con).unwrap();
    }
}

/// Checks (pipelined) that every `(key, value)` is readable with its value and a TTL in
/// `[ttl - elapsed - 2, ttl]`: neither lost nor reset by a migration.
fn check_all(
    ports: &[u16],
    con: &mut ClusterConnection,
    keys: &[(String, String)],
    ttl: u64,
    since: Instant,
) {
    for chunk in keys.chunks(BATCH / 2) {
        let mut pipe = cluster_pipe();
        for (k, _) in chunk {
            pipe.get(k).ttl(k);
        }
        let got: Vec<(Option<String>, i64)> =
            retrying(ports, con, "checking reads", |c| pipe.query(c));
        let lowest = ttl as i64 - since.elapsed().as_secs() as i64 - 2;
        for ((k, v), (got, left)) in chunk.iter().zip(got) {
            assert_eq!(got.as_deref(), Some(v.as_str()), "key {k} kept its value");
            assert!(
                (lowest..=ttl as i64).contains(&left),
                "key {k} kept its TTL: {left} not in {lowest}..={ttl}"
            );
        }
    }
}

/// What the background thread did: its acknowledged writes, reads checked, and work rounds
/// overlapping each phase (0 before the join, 1 join, 2 SIGTERM drain, 3 after).
struct Background {
    acked: Vec<(String, String)>,
    reads: usize,
    rounds: [usize; 4],
}

/// Reads and writes through a cluster client until `stop` (bounded in rounds and time): each
/// round writes 10 new keys (TTL `BG_TTL`) in a pipeline, then reads them back and 10 bulk keys.
fn background(ports: &[u16], stop: &AtomicBool, phase: &AtomicUsize) -> Background {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut con = cluster_client(ports);
    let mut out = Background {
        acked: Vec::new(),
        reads: 0,
        rounds: [0; 4],
    };
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && n < 500_000 {
        let first_phase = phase.load(Ordering::Relaxed);
        let batch: Vec<(String, String)> = (n..n + 10)
            .map(|i| (format!("bg:{i}"), format!("bgv:{i}")))
            .collect();
        let mut pipe = cluster_pipe();
        for (k, v) in &batch {
            pipe.set_ex(k, v, BG_TTL).ignore();
        }
        retrying(ports, &mut con, "background write", |c| pipe.query::<()>(c));
        let mut pipe = cluster_pipe();
        for (k, _) in &batch {
            pipe.get(k);
        }
        let bulk: Vec<usize> = (0..10).map(|j| ((n + j) * 7919) % BULK).collect();
        for i in &bulk {
            pipe.get(format!("key:{i}"));
        }
        let got: Vec<Option<String>> =
            retrying(ports, &mut con, "background read", |c| pipe.query(c));
        let want = batch
            .iter()
            .map(|(_, v)| v.clone())
            .chain(bulk.iter().map(|i| format!("value:{i}")));
        for (got, want) in got.iter().zip(want) {
            assert_eq!(got.as_deref(), Some(want.as_str()), "read during migration");
        }
        out.reads += got.len();
        out.acked.extend(batch);
        // A round counts for every phase it overlapped.
        for p in first_phase..=phase.load(Ordering::Relaxed) {
            out.rounds[p] += 1;
        }
        n += 10;
        // Leave the (shared, 1-2 core) machine some room for the migration itself.
        std::thread::sleep(Duration::from_millis(5));
    }
    out
}

/// The background thread ended before it was told to: re-raise its panic (or say it hit its
/// bounds).
fn ended_early(bg: std::thread::JoinHandle<Background>) -> ! {
    match bg.join() {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(b) => panic!(
            "background thread hit its bounds early: rounds {:?}",
            b.rounds
        ),
    }
}

#[test]
fn processes_join_leave_on_sigterm_and_survive_kill_9() {
    let _alone = one_at_a_time();
    let test_start = Instant::now();
    let cfg = config_file("cluster-process");
    let mut procs: Vec<Proc> = (0..3).map(|i| start(&cfg, i)).collect();
    let ports = |procs: &[Proc]| procs.iter().map(|p| p.port).collect::<Vec<_>>();
    wait_stable(&ports(&procs), 3, 60, || {});

    let mut con = cluster_client(&ports(&procs));
    let bulk_start = Instant::now();
    write_bulk(&mut con);
    let bulk_s = bulk_start.elapsed().as_secs_f64();

    // Reads and writes in the background throughout the join and the SIGTERM leave.
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicUsize::new(0));
    let bg_ports: Vec<u16> = (0..4).map(|i| 26200 + i).collect();
    let bg_start = Instant::now();
    let bg = {
        let (stop, phase) = (stop.clone(), phase.clone());
        std::thread::spawn(move || background(&bg_ports, &stop, &phase))
    };

    // A 4th process joins.
    phase.store(1, Ordering::Relaxed);
    let join_start = Instant::now();
    procs.push(start(&cfg, 3));
    let live = ports(&procs);
    wait_stable(&live, 4, 180, || {});
    let join_s = join_start.elapsed().as_secs_f64();
    if bg.is_finished() {
        ended_early(bg);
    }

    // The coordinator gets SIGTERM: it drains its slots, then exits by itself. It plans and
    // pushes its own last commit table, so it must not exit before the others hold it: until
    // 2026-12-01 it could, and the others sent clients to the exited node until a new
    // coordinator planned again, one lease (here 5 s) later.
    phase.store(2, Ordering::Relaxed);
    let coordinator = coordinator_of(procs[0].port);
    let at = procs
        .iter()
        .position(|p| my_id(p.port) == coordinator)
        .expect("the coordinator is a live node");
    let leave_start = Instant::now();
    let mut leaver = procs.remove(at);
    let pid = leaver.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(status) = leaver.child.try_wait().unwrap() {
            assert!(status.success(), "drained node exits cleanly: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "SIGTERM drain did not finish");
        if bg.is_finished() {
            ended_early(bg);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let leave_s = leave_start.elapsed().as_secs_f64();
    drop(leaver);
    // At its exit every other node already routes by a table that gives it no slot.
    for p in &procs {
        let (epoch, owners, _) = table(p.port).expect("routing table");
        assert!(
            !owners.contains(&coordinator),
            "node {} still routes slots to the exited leaver (epoch {epoch})",
            p.port
        );
    }
    phase.store(3, Ordering::Relaxed);
    wait_stable(&ports(&procs), 3, 60, || {});
    if bg.is_finished() {
        ended_early(bg);
    }
    stop.store(true, Ordering::Relaxed);
    let bg = bg.join().expect("background reads and writes succeed");
    assert!(
        bg.rounds[1] > 0 && bg.rounds[2] > 0,
        "background work overlapped the join and the leave: rounds {:?}",
        bg.rounds
    );

    // Every acknowledged write is readable with its value and TTL.
    let live = ports(&procs);
    let mut con = cluster_client(&live);
    let bulk: Vec<(String, String)> = (0..BULK)
        .map(|i| (format!("key:{i}"), format!("value:{i}")))
        .collect();
    check_all(&live, &mut con, &bulk, BULK_TTL, bulk_start);
    check_all(&live, &mut con, &bg.acked, BG_TTL, bg_start);
    eprintln!(
        "{BULK} keys written in {bulk_s:.1} s; join {join_s:.1} s, SIGTERM leave {leave_s:.1} s; \
         background: {} writes, {} reads, rounds per phase {:?}",
        bg.acked.len(),
        bg.reads,
        bg.rounds
    );
    let mut keys = bulk;
    keys.extend(bg.acked);

    // kill -9 of a node: the others detect it and keep serving. Its keys are lost (no
    // replication yet); every other key stays, and every slot takes writes again. Quorum 3
    // of 3 would stop writes, so one more node joins first.
    procs.push(start(&cfg, 4));
    wait_stable(&ports(&procs), 4, 180, || {});
    let victim = procs.remove(0);
    let victim_port = victim.port;
    let victim_keys = owned_keys(victim_port);
    drop(victim); // SIGKILL
    let started = Instant::now();
    wait_stable(&ports(&procs), 3, 60, || {});
    let detect_s = started.elapsed().as_secs_f64();
    assert!(detect_s < 30.0, "detection took {detect_s} s");
    let live = ports(&procs);
    let mut con = cluster_client(&live);
    let mut kept = 0;
    for chunk in keys.chunks(BATCH) {
        let mut pipe = cluster_pipe();
        for (k, _) in chunk {
            pipe.get(k);
        }
        let got: Vec<Option<String>> =
            retrying(&live, &mut con, "reads after kill -9", |c| pipe.query(c));
        for ((k, v), got) in chunk.iter().zip(got) {
            if let Some(got) = got {
                assert_eq!(&got, v, "surviving key {k} keeps its value");
                kept += 1;
            }
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
    eprintln!("total {:.1} s", test_start.elapsed().as_secs_f64());
    let _ = std::fs::remove_file(cfg);
}

/// Whether the node on `port` sees the member whose client port is `member_port` as alive
/// (`CLUSTER.MEMBERS`, RESP2: one flat name/value array per member).
fn sees_alive(port: u16, member_port: u16) -> Option<bool> {
    let v: Value = redis::cmd("CLUSTER.MEMBERS").query(&mut conn(port)?).ok()?;
    let Value::Array(members) = v else {
        return None;
    };
    let addr = format!("127.0.0.1:{member_port}");
    for m in members {
        let Value::Array(f) = m else { return None };
        let field = |name: &str| {
            f.chunks(2)
                .find(|kv| kv[0] == Value::BulkString(name.as_bytes().to_vec()))
                .map(|kv| kv[1].clone())
        };
        if field("addr") == Some(Value::BulkString(addr.clone().into_bytes())) {
            return Some(field("alive") == Some(Value::Int(1)));
        }
    }
    Some(false)
}

fn signal(p: &Proc, sig: &str) {
    let pid = p.child.id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

/// The coordinator (the oldest node) is stopped with SIGSTOP while a joining node's migrations
/// are under way, long enough to be declared down (another coordinator takes over the join),
/// writes go on to the live nodes' slots, then the stopped node continues with its stale view,
/// clock and queued commit requests: every acknowledged
/// write keeps its value and TTL, and the cluster settles with all five nodes. This is what
/// starvation does to a node (cluster/README.md, "Process pauses"); the coordinator lease keeps
/// the resumed node from planning or committing from its stale table.
#[test]
fn a_stopped_and_continued_coordinator_loses_nothing() {
    let _alone = one_at_a_time();
    let cfg = config_file("cluster-process-stop");
    let mut procs: Vec<Proc> = Vec::new();
    for i in 5..9 {
        // Started one by one so node 5 is the oldest member, the coordinator.
        procs.push(start(&cfg, i));
        std::thread::sleep(Duration::from_millis(300));
    }
    let ports = |procs: &[Proc]| procs.iter().map(|p| p.port).collect::<Vec<_>>();
    wait_stable(&ports(&procs), 4, 60, || {});
    let mut con = cluster_client(&ports(&procs));
    const KEYS: usize = 50_000;
    let bulk: Vec<(String, String)> = (0..KEYS)
        .map(|i| (format!("stop:{i}"), format!("v:{i}")))
        .collect();
    let bulk_start = Instant::now();
    for chunk in bulk.chunks(BATCH) {
        let mut pipe = cluster_pipe();
        for (k, v) in chunk {
            pipe.set_ex(k, v, BULK_TTL).ignore();
        }
        let () = pipe.query(&mut con).unwrap();
    }

    // Hash tags whose slots the live nodes own (not the one to be stopped): writes during the
    // stop go there, so no request waits on the stopped process.
    let stopped_port = procs[0].port;
    let live: Vec<u16> = ports(&procs[1..]);
    let mut live_con = conn(live[0]).unwrap();
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query(&mut live_con)
        .unwrap();
    let Value::Array(ranges) = slots else {
        panic!("CLUSTER SLOTS: {slots:?}")
    };
    let stopped_owns = |slot: i64| {
        ranges.iter().any(|r| {
            let Value::Array(f) = r else { return false };
            let (Value::Int(lo), Value::Int(hi), Value::Array(master)) = (&f[0], &f[1], &f[2])
            else {
                return false;
            };
            (*lo..=*hi).contains(&slot)
                && master.get(1) == Some(&Value::Int(i64::from(stopped_port)))
        })
    };
    // Each tag with the live node that owns its slot; written through plain connections with
    // read timeouts (a cluster client would also connect to the stopped node and can wait on it
    // without a timeout).
    let owner_of = |slot: i64| -> Option<u16> {
        ranges.iter().find_map(|r| {
            let Value::Array(f) = r else { return None };
            let (Value::Int(lo), Value::Int(hi), Value::Array(master)) = (&f[0], &f[1], &f[2])
            else {
                return None;
            };
            let Value::Int(port) = master.get(1)? else {
                return None;
            };
            ((*lo..=*hi).contains(&slot)).then_some(*port as u16)
        })
    };
    let tags: Vec<(String, u16)> = (0..200)
        .map(|t| format!("t{t}"))
        .filter_map(|t| {
            let slot: i64 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(format!("{{{t}}}"))
                .query(&mut live_con)
                .unwrap();
            let owner = owner_of(slot)?;
            (!stopped_owns(slot) && owner != stopped_port).then_some((t, owner))
        })
        .collect();
    assert!(
        tags.len() > 50,
        "most tags are on the live nodes: {}",
        tags.len()
    );

    // A 5th node joins; once its migrations are under way (commit requests go to the
    // coordinator), the coordinator is stopped.
    procs.push(start(&cfg, 9));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !table(live[0]).is_some_and(|t| t.2) {
        assert!(
            Instant::now() < deadline,
            "the join's migrations never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(&procs[0], "-STOP");
    let stop_start = Instant::now();
    let mut during: Vec<(String, String)> = Vec::new();
    let mut declared_down = false;
    let mut cons: std::collections::HashMap<u16, redis::Connection> =
        std::collections::HashMap::new();
    let mut n = 0;
    // Stopped for 12 s: past failure detection (about 5.5 s with this config), within
    // `member_down_grace_ms` (10 s) of being declared down.
    while stop_start.elapsed() < Duration::from_secs(12) {
        if !declared_down {
            declared_down = sees_alive(live[0], stopped_port) == Some(false);
        }
        for i in n..n + 20 {
            let (tag, owner) = &tags[i % tags.len()];
            let (key, value) = (format!("d:{{{tag}}}:{i}"), format!("dv:{i}"));
            let Some(owner_con) = cons.get_mut(owner) else {
                if let Some(fresh) = conn(*owner) {
                    cons.insert(*owner, fresh);
                }
                continue;
            };
            let reply: RedisResult<()> = redis::cmd("SET")
                .arg(&key)
                .arg(&value)
                .arg("EX")
                .arg(BULK_TTL)
                .query(owner_con);
            match reply {
                // Acknowledged: must survive.
                Ok(()) => during.push((key, value)),
                // Not acknowledged (-MOVED once a slot moved to the new node, -TRYAGAIN in a
                // handoff): need not survive.
                Err(err) if err.kind() == redis::ErrorKind::IoError => {
                    cons.remove(owner);
                }
                Err(_) => {}
            }
        }
        n += 20;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        declared_down,
        "the stopped coordinator was declared down by the others"
    );
    signal(&procs[0], "-CONT");
    wait_stable(&ports(&procs), 5, 180, || {});

    let all = ports(&procs);
    let mut con = cluster_client(&all);
    check_all(&all, &mut con, &bulk, BULK_TTL, bulk_start);
    check_all(&all, &mut con, &during, BULK_TTL, bulk_start);
    eprintln!(
        "stopped 12 s; {} writes acknowledged during the stop ({n} tried); {KEYS} bulk keys kept",
        during.len()
    );
    assert!(
        during.len() > 100,
        "writes went on during the stop: {}",
        during.len()
    );
    let _ = std::fs::remove_file(cfg);
}
