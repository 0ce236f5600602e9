//! End-to-end tests of the `tesserad` binary: flags, config file and `TESSERA_CONFIG`
//! precedence, rejection of unknown config keys, `--cores`, and orderly exit on SIGTERM/SIGINT
//! (every request sent before the signal is answered, exit status 0).
//!
//! Each test starts the binary on `127.0.0.1` with `--port 0` and learns the port from its
//! "ready to accept connections" log line. Every wait is bounded by a deadline; a daemon still
//! running when its test ends is killed (by pid) on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tesserad");
/// Longest any single step (start-up, exit, a reply) may take before the test fails.
const STEP: Duration = Duration::from_secs(30);

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tesserad-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes terminal colour sequences (`ESC [ ... m`) from a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A running `tesserad`, killed on drop if it has not exited.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
    /// Set when the log pipe reached EOF (the process and its stderr are gone).
    log_done: Arc<std::sync::atomic::AtomicBool>,
}

/// How to start the binary.
fn tesserad(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--bind", "127.0.0.1", "--port", "0", "--log-level", "info"])
        .args(args)
        .env_remove("TESSERA_CONFIG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

impl Daemon {
    /// Starts `cmd` and waits (bounded) for its "ready" line; panics with the log otherwise.
    fn start(mut cmd: Command) -> Daemon {
        let mut child = cmd.spawn().expect("tesserad starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        let log_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = Arc::clone(&log_done);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
                if line.contains("ready to accept connections") {
                    let _ = tx.send(line);
                }
            }
            done.store(true, Ordering::SeqCst);
        });
        let Ok(ready) = rx.recv_timeout(STEP) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tesserad did not become ready:\n{}", log.lock().unwrap());
        };
        let addr = ready
            .split_whitespace()
            .find_map(|f| f.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {ready:?}"))
            .parse()
            .unwrap();
        Daemon {
            child,
            addr,
            log,
            log_done,
        }
    }

    fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).unwrap()
    }

    fn client(&self) -> redis::Connection {
        let c = redis::Client::open(format!("redis://{}/", self.addr)).unwrap();
        let con = c.get_connection_with_timeout(STEP).unwrap();
        con.set_read_timeout(Some(STEP)).unwrap();
        con
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with the pid of our own child process and a valid signal number;
        // it touches no memory of this process.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    /// Waits (bounded) for the process to exit and for its last log line to be read.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                while !self.log_done.load(Ordering::SeqCst) {
                    assert!(Instant::now() < deadline, "stderr of tesserad stays open");
                    std::thread::sleep(Duration::from_millis(5));
                }
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "tesserad did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Executors of the process: distinct `tessera-core-N-` thread names in /proc (glommio
    /// adds a helper thread per executor that inherits the name).
    fn executor_threads(&self) -> usize {
        let mut names = std::collections::HashSet::new();
        for t in std::fs::read_dir(format!("/proc/{}/task", self.child.id())).unwrap() {
            let comm = std::fs::read_to_string(t.unwrap().path().join("comm")).unwrap_or_default();
            if comm.starts_with("tessera-core-") {
                names.insert(comm.trim().to_owned());
            }
        }
        names.len()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the binary expecting it to fail at start-up (bounded); returns (status, stderr).
fn run_failing(mut cmd: Command) -> (ExitStatus, String) {
    let mut child = cmd.spawn().expect("tesserad starts");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tesserad kept running although its config is bad");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, strip_ansi(&reader.join().unwrap()))
}

fn config_get(c: &mut redis::Connection, name: &str) -> String {
    let v: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(c).unwrap();
    assert_eq!(v.len(), 2, "CONFIG GET {name}: {v:?}");
    assert_eq!(v[0], name);
    v[1].clone()
}

/// The server error code and text of a command that must fail.
fn error_of(c: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<redis::Value>(c) {
        Ok(v) => panic!("{args:?} should fail, got {v:?}"),
        Err(e) => format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or("")),
    }
}

fn ok(c: &mut redis::Connection, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let r: String = cmd
        .query(c)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"));
    assert_eq!(r, "OK", "{args:?}");
}

#[test]
fn defaults_then_file_then_flags() {
    let dir = TempDir::new("precedence");
    let file = dir.file(
        "node.toml",
        "[engine]\nmaxmemory_bytes = 1048576\nmaxmemory_policy = \"allkeys-lru\"\n\
         [net]\nrequirepass = \"filepw\"\n[runtime]\ncores = 1\n",
    );
    let file_s = file.to_str().unwrap();

    // Defaults: no memory limit, noeviction, no password.
    let d = Daemon::start(tesserad(&["--cores", "1"]));
    let mut c = d.client();
    assert_eq!(config_get(&mut c, "maxmemory"), "0");
    assert_eq!(config_get(&mut c, "maxmemory-policy"), "noeviction");
    let e = error_of(&mut c, &["AUTH", "anything"]);
    assert!(e.contains("without any password configured"), "{e}");
    drop(d);

    // The file (through --config) overrides the defaults.
    let d = Daemon::start(tesserad(&["--config", file_s]));
    let mut c = d.client();
    let e = error_of(&mut c, &["CONFIG", "GET", "maxmemory"]);
    assert!(e.starts_with("NOAUTH"), "{e}");
    ok(&mut c, &["AUTH", "filepw"]);
    assert_eq!(config_get(&mut c, "maxmemory"), "1048576");
    assert_eq!(config_get(&mut c, "maxmemory-policy"), "allkeys-lru");
    assert_eq!(d.executor_threads(), 1, "[runtime] cores = 1 from the file");
    drop(d);

    // The same file through TESSERA_CONFIG; flags override some of its values, the rest stay.
    let mut cmd = tesserad(&["--maxmemory", "2mb", "--requirepass", "flagpw"]);
    cmd.env("TESSERA_CONFIG", &file);
    let d = Daemon::start(cmd);
    let mut c = d.client();
    let e = error_of(&mut c, &["AUTH", "filepw"]);
    assert!(e.starts_with("WRONGPASS"), "{e}");
    ok(&mut c, &["AUTH", "flagpw"]);
    assert_eq!(config_get(&mut c, "maxmemory"), "2097152");
    assert_eq!(config_get(&mut c, "maxmemory-policy"), "allkeys-lru");
    drop(d);

    // --maxmemory-policy overrides the file's policy; --config wins over TESSERA_CONFIG.
    let mut cmd = tesserad(&["--config", file_s, "--maxmemory-policy", "volatile-ttl"]);
    cmd.env("TESSERA_CONFIG", dir.0.join("does-not-exist.toml"));
    let d = Daemon::start(cmd);
    let mut c = d.client();
    ok(&mut c, &["AUTH", "filepw"]);
    assert_eq!(config_get(&mut c, "maxmemory"), "1048576");
    assert_eq!(config_get(&mut c, "maxmemory-policy"), "volatile-ttl");
}

#[test]
fn bad_config_is_rejected_with_a_clear_message() {
    let dir = TempDir::new("bad");
    // An unknown key in a known table, and an unknown table.
    for (name, text, needle) in [
        ("key.toml", "[net]\nprot = 7000\n", "prot"),
        ("table.toml", "[netwrok]\nport = 7000\n", "netwrok"),
    ] {
        let path = dir.file(name, text);
        let (status, err) = run_failing(tesserad(&["--config", path.to_str().unwrap()]));
        assert!(!status.success(), "{name}: {status}");
        assert!(
            err.contains("unknown field") && err.contains(needle),
            "{name}: {err}"
        );
        // Through the environment variable too.
        let mut cmd = tesserad(&[]);
        cmd.env("TESSERA_CONFIG", &path);
        let (status, err) = run_failing(cmd);
        assert!(!status.success(), "{name} via env: {status}");
        assert!(err.contains(needle), "{name} via env: {err}");
    }
    // A missing file names the path; a bad flag value names the value.
    let missing = dir.0.join("missing.toml");
    let (status, err) = run_failing(tesserad(&["--config", missing.to_str().unwrap()]));
    assert!(!status.success());
    assert!(err.contains("missing.toml"), "{err}");
    let (status, err) = run_failing(tesserad(&["--maxmemory", "lots"]));
    assert!(!status.success());
    assert!(err.contains("lots"), "{err}");
    let (status, err) = run_failing(tesserad(&["--maxmemory-policy", "random-guess"]));
    assert!(!status.success());
    assert!(err.contains("random-guess"), "{err}");
}

#[test]
fn one_and_two_cores_serve_and_exit_on_sigint() {
    for cores in [1usize, 2] {
        let mut d = Daemon::start(tesserad(&["--cores", &cores.to_string()]));
        assert_eq!(d.executor_threads(), cores, "{cores} executor threads");
        let mut c = d.client();
        let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
        assert!(info.contains(&format!("executors:{cores}\r\n")), "{info}");
        for i in 0..200 {
            ok(&mut c, &["SET", &format!("k{i}"), &i.to_string()]);
        }
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        let vals: Vec<String> = redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
        let want: Vec<String> = (0..200).map(|i| i.to_string()).collect();
        assert_eq!(vals, want);
        let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
        assert_eq!(n, 200);
        if cores == 2 {
            // Keys landed on both executors' shards.
            let shards: String = redis::cmd("INFO").arg("shards").query(&mut c).unwrap();
            for core in 0..2 {
                let line = shards
                    .lines()
                    .find(|l| l.starts_with(&format!("core{core}:")))
                    .unwrap_or_else(|| panic!("{shards}"));
                assert!(!line.contains(",keys=0,"), "{line}");
            }
        }
        d.signal(libc::SIGINT);
        let st = d.wait_exit();
        assert_eq!(st.code(), Some(0), "SIGINT exit status; log:\n{}", d.log());
        assert!(d.log().contains("signal received"), "{}", d.log());
        assert!(TcpStream::connect(d.addr).is_err(), "no longer accepting");
    }
}

/// SIGTERM while a client's long pipeline is in flight: the server is blocked writing replies
/// the client has not read yet, with thousands of requests still unread in its socket buffer.
/// Every request sent before the signal gets its reply, in order, then the process exits 0.
#[test]
fn sigterm_answers_every_request_sent_before_it_and_exits_0() {
    // The grace bounds how long the drain may take; a loaded test machine needs more than the
    // default 5 s for 20 MB through a debug build.
    let dir = TempDir::new("sigterm");
    let file = dir.file("grace.toml", "[net]\nshutdown_grace_ms = 25000\n");
    let mut daemon = Daemon::start(tesserad(&[
        "--cores",
        "2",
        "--config",
        file.to_str().unwrap(),
    ]));
    let mut admin = daemon.client();
    // Big values on both cores: replies (4 KiB each) far outgrow the socket buffers, so the
    // server stalls on writing and stops reading while the pipeline is still being answered.
    let value = "v".repeat(4096);
    let keys: Vec<String> = (0..16).map(|i| format!("big:{i}")).collect();
    for k in &keys {
        ok(&mut admin, &["SET", k, &value]);
    }
    let shards: String = redis::cmd("INFO").arg("shards").query(&mut admin).unwrap();
    assert!(
        shards.lines().filter(|l| l.starts_with("core")).count() == 2
            && !shards.contains(",keys=0,"),
        "big keys on both cores: {shards}"
    );
    let total = 5_000;
    let mut req = Vec::new();
    for i in 0..total {
        let k = &keys[i % keys.len()];
        req.extend_from_slice(format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len()).as_bytes());
    }
    let mut sock = TcpStream::connect(daemon.addr).unwrap();
    sock.set_read_timeout(Some(STEP)).unwrap();
    sock.set_write_timeout(Some(STEP)).unwrap();
    // About 130 KB of requests: the loopback buffers take all of it without the client reading.
    sock.write_all(&req).unwrap();
    // Wait (bounded) until replies pile up unread here: the server is answering, and since
    // 5000 replies of 4 KiB (20 MB) cannot fit in the socket buffers of a connection that is
    // not read (a few MB at most) it stalls on writing with most of the pipeline unanswered.
    let deadline = Instant::now() + STEP;
    let mut peek = vec![0u8; 1 << 20];
    loop {
        let ready = sock.peek(&mut peek).unwrap();
        if ready >= 32 * 1024 {
            break;
        }
        assert!(Instant::now() < deadline, "server never answered");
        std::thread::sleep(Duration::from_millis(5));
    }
    daemon.signal(libc::SIGTERM);
    let signalled = Instant::now();
    // Now read everything: n bulk replies of the value, then EOF.
    let mut got = Vec::with_capacity(total * (value.len() + 16));
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + STEP;
    loop {
        assert!(Instant::now() < deadline, "reading replies took too long");
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => panic!(
                "read failed after {} bytes, {:?} after the signal: {e}; log:\n{}",
                got.len(),
                signalled.elapsed(),
                daemon.log()
            ),
        }
    }
    let one = format!("${}\r\n{value}\r\n", value.len());
    assert_eq!(
        got.len() % one.len(),
        0,
        "replies are whole ({} bytes)",
        got.len()
    );
    let replies = got.len() / one.len();
    assert_eq!(
        replies, total,
        "every request sent before SIGTERM was answered"
    );
    assert!(got.chunks(one.len()).all(|r| r == one.as_bytes()));
    let status = daemon.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM exit status; log:\n{}",
        daemon.log()
    );
    assert!(daemon.log().contains("signal received"), "{}", daemon.log());
}
