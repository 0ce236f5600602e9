//! End-to-end tests of the `tessera` binary against a real redis-server that each test starts on
//! a free loopback port (and kills on drop, also on panic).
//!
//! One-shot, stdin and stats modes run the binary directly. The REPL is driven as a person would
//! use it: inside tmux, typing with `send-keys` and reading the screen with `capture-pane`. When
//! redis-server (or tmux, for the REPL tests) is missing, a test says so and is skipped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");
/// Longest any single step (a process run, a screen change) may take before the test fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tessera-cli-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server child process, killed by pid on drop.
struct Redis {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Redis {
    /// Starts redis-server on a free port, or returns `None` (after saying so) when it is not
    /// installed.
    fn start() -> Option<Redis> {
        Self::start_with(&[])
    }

    /// [`Redis::start`] with extra redis-server arguments.
    fn start_with(extra: &[&str]) -> Option<Redis> {
        if !have("redis-server") {
            eprintln!("SKIPPED: redis-server is not installed");
            return None;
        }
        for _ in 0..5 {
            let port = free_port();
            let dir = TempDir::new("redis");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir.0)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let mut redis = Redis { child, port, dir };
            if redis.wait_ready() {
                return Some(redis);
            }
            // Probably lost the port to someone else: drop kills it, try another.
        }
        panic!("redis-server did not start on any of 5 ports");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 7];
                // `-NOAUTH` when a password is set: still a live redis.
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

    fn port_arg(&self) -> String {
        self.port.to_string()
    }

    /// Kills the server and starts a fresh one on the same port.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        assert!(
            self.wait_ready(),
            "redis-server did not restart on its port"
        );
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tessera` with `args` and `stdin`, bounded by [`STEP_TIMEOUT`].
fn run_with(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn tessera");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "tessera {args:?} did not finish in {STEP_TIMEOUT:?}; stdout: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(args: &[&str]) -> Output {
    run_with(args, b"", &[])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn one_shot_commands_as_arguments_and_with_dash_c() {
    let Some(redis) = Redis::start() else { return };
    let p = redis.port_arg();
    let out = run(&["-p", &p, "SET", "greeting", "hello world"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "OK\n");
    // Not a terminal: raw output, like redis-cli.
    let out = run(&["-p", &p, "-c", "GET greeting"]);
    assert_eq!(text(&out.stdout), "hello world\n");
    assert!(out.status.success());
    let out = run(&["-p", &p, "--no-raw", "-c", "GET greeting"]);
    assert_eq!(text(&out.stdout), "\"hello world\"\n");
    let out = run(&[
        "--host",
        "127.0.0.1",
        "--port",
        &p,
        "--no-raw",
        "GET",
        "missing",
    ]);
    assert_eq!(text(&out.stdout), "(nil)\n");
    let out = run(&["-p", &p, "--no-raw", "-c", r#"RPUSH l a "b c" "\x00\n""#]);
    assert_eq!(text(&out.stdout), "(integer) 3\n");
    let out = run(&["-p", &p, "--no-raw", "LRANGE", "l", "0", "-1"]);
    assert_eq!(text(&out.stdout), "1) \"a\"\n2) \"b c\"\n3) \"\\x00\\n\"\n");
}

#[test]
fn error_replies_and_failures_exit_non_zero() {
    let Some(redis) = Redis::start() else { return };
    let p = redis.port_arg();
    assert!(run(&["-p", &p, "SET", "s", "text"]).status.success());
    let out = run(&["-p", &p, "--no-raw", "INCR", "s"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stdout), "", "errors stay off stdout");
    assert_eq!(
        text(&out.stderr),
        "(error) ERR value is not an integer or out of range\n"
    );
    let out = run(&["-p", &p, "-c", "GET \"unbalanced"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Invalid argument(s)"), "{out:?}");
    // A port nobody listens on.
    let closed = free_port();
    let out = run(&["-p", &closed.to_string(), "PING"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "tessera: could not connect to 127.0.0.1:{closed}: "
        )),
        "{err}"
    );
    // Wrong password: the handshake error is reported, not a later confusing one.
    let out = run(&["-p", &p, "-a", "nope", "PING"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("AUTH failed"), "{out:?}");
    // Bad usage is clap's exit code 2.
    let out = run(&["-p", "notaport", "PING"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn stdin_runs_one_command_per_line() {
    let Some(redis) = Redis::start() else { return };
    let p = redis.port_arg();
    let script = b"SET n 1\n\n# a comment\nINCR n\nGET n\n";
    let out = run_with(&["-p", &p], script, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "OK\n2\n2\n");
    // An error in the middle does not stop the script, but the exit status reports it.
    let out = run_with(
        &["-p", &p, "--no-raw"],
        b"INCR n\nHSET n f v\nINCR n\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "(integer) 3\n(integer) 4\n");
    assert!(
        text(&out.stderr).starts_with("(error) WRONGTYPE"),
        "{out:?}"
    );
    // With stdout and stderr on one pipe, replies and errors keep their order even though
    // stdout is buffered for speed.
    let merged = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'PING\\nHSET h2 f v\\nINCR h2\\nPING\\n' | '{BIN}' -p {p} 2>&1"
        ))
        .output()
        .unwrap();
    assert_eq!(
        text(&merged.stdout),
        "PONG\n1\nWRONGTYPE Operation against a key holding the wrong kind of value\nPONG\n"
    );
    // `use` and map verbs work in scripts too; redis-server's error text shows what was sent.
    let out = run_with(&["-p", &p], b"use users\nput alice 1 EX 10\n", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("'DM.PUT', with args beginning with: 'users' 'alice' '1' 'EX' '10'"),
        "{out:?}"
    );
    // help renders a command's syntax from COMMAND DOCS; with a map in use, a verb's usage.
    let out = run_with(
        &["-p", &p],
        b"help set\nuse m\nhelp put\nhelp nosuch\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let shown = text(&out.stdout);
    assert!(
        shown.contains("\n  SET key value [NX | XX] [GET] [EX seconds | PX milliseconds"),
        "{shown}"
    );
    assert!(
        shown.contains("  summary: Set the string value of a key\n"),
        "{shown}"
    );
    assert!(shown.contains("\n  put key value [EX s|PX ms"), "{shown}");
    assert_eq!(text(&out.stderr), "(error) no help for 'nosuch'\n");
    // quit stops reading.
    let out = run_with(&["-p", &p], b"PING\nquit\nSET never 1\n", &[]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "PONG\n");
    assert_eq!(text(&run(&["-p", &p, "EXISTS", "never"]).stdout), "0\n");
}

#[test]
fn resp3_replies_are_printed_by_type() {
    let Some(redis) = Redis::start() else { return };
    let p = redis.port_arg();
    let script = b"HSET h f v\nHGETALL h\nZADD z 1.5 a\nZRANGE z 0 -1 WITHSCORES\nSADD s x\n\
                   SMEMBERS s\nHGETALL nothing\n";
    let out = run_with(&["-p", &p, "--resp3", "--no-raw"], script, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        "(integer) 1\n1# \"f\" => \"v\"\n(integer) 1\n1) 1) \"a\"\n   2) (double) 1.5\n\
         (integer) 1\n1~ \"x\"\n(empty hash)\n"
    );
}

/// Our human form must match redis-cli's byte for byte.
#[test]
fn human_output_matches_redis_cli() {
    let Some(redis) = Redis::start() else { return };
    if !have("redis-cli") {
        eprintln!("SKIPPED: redis-cli is not installed");
        return;
    }
    let p = redis.port_arg();
    let setup =
        "RPUSH list a \"b\\tc\" \"\\xff\"\nHSET h f1 v1 f2 \"two words\"\nZADD z 1 a 2.5 b\n\
                 SET n 10\nSADD s m\n";
    assert!(run_with(&["-p", &p], setup.as_bytes(), &[])
        .status
        .success());
    let commands: &[&[&str]] = &[
        &["LRANGE", "list", "0", "-1"],
        &["HGETALL", "h"],
        &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        &["GET", "n"],
        &["GET", "nothing"],
        &["HGET", "n", "f"],
        &["LRANGE", "nothing", "0", "-1"],
        &["COMMAND", "INFO", "get"],
        &["SCAN", "0", "COUNT", "100", "TYPE", "none"],
        &["PING"],
        &["SMEMBERS", "s"],
    ];
    for proto in ["2", "3"] {
        for c in commands {
            let mut ours = vec!["-p", &p, "--no-raw"];
            let mut theirs = vec!["-p", p.as_str(), "--no-raw"];
            if proto == "3" {
                ours.push("--resp3");
                theirs.push("-3");
            }
            ours.extend_from_slice(c);
            theirs.extend_from_slice(c);
            let mine = run(&ours);
            let cli = Command::new("redis-cli").args(&theirs).output().unwrap();
            // Ours prints error replies on stderr (stdout carries only data) and exits 1.
            let is_error = c[0] == "HGET";
            assert_eq!(mine.status.success(), !is_error, "{c:?}: {mine:?}");
            let shown = text(if is_error { &mine.stderr } else { &mine.stdout });
            assert_eq!(shown, text(&cli.stdout), "RESP{proto} {c:?}");
        }
    }
}

#[test]
fn stats_reports_the_node_as_table_and_json() {
    let Some(redis) = Redis::start() else { return };
    let p = redis.port_arg();
    use std::fmt::Write as _;
    let mut script = String::new();
    for i in 0..25 {
        writeln!(script, "SET key{i} {i}").unwrap();
    }
    assert!(run_with(&["-p", &p], script.as_bytes(), &[])
        .status
        .success());
    assert!(run(&["-p", &p, "GET", "key1"]).status.success());
    assert!(run(&["-p", &p, "GET", "absent"]).status.success());

    let out = run(&["stats", "-p", &p, "--json", "--interval", "0.2"]);
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = &doc["nodes"][0];
    assert_eq!(node["addr"], format!("127.0.0.1:{p}"));
    assert_eq!(node["keys"], 25);
    assert_eq!(node["hits"], 1);
    assert_eq!(node["misses"], 1);
    assert!(node["memory_bytes"].as_u64().unwrap() > 0);
    assert!(node["connections"].as_u64().unwrap() >= 1);
    // The first sample's INFO is counted by the second: the rate cannot be zero.
    assert!(node["ops_per_sec"].as_f64().unwrap() > 0.0, "{node}");

    let out = run(&["-p", &p, "stats", "--interval", "0.1"]);
    assert!(out.status.success());
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NODE/CORE"), "{table}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cells[0], format!("127.0.0.1:{p}"));
    assert_eq!(cells[1], "25");

    // Watch mode, bounded: one JSON document per refresh.
    let out = run(&[
        "stats",
        "-p",
        &p,
        "--json",
        "--watch",
        "0.1",
        "--iterations",
        "3",
        "--interval",
        "0.1",
    ]);
    assert!(out.status.success(), "{out:?}");
    let docs: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 3);
    assert!(docs.iter().all(|d| d["nodes"][0]["keys"] == 25));

    // Watch mode as a table: a header per refresh (no screen clearing off a terminal).
    let out = run(&[
        "stats",
        "-p",
        &p,
        "--watch",
        "0.1",
        "--iterations",
        "2",
        "--interval",
        "0.1",
    ]);
    assert!(out.status.success(), "{out:?}");
    let table = text(&out.stdout);
    assert!(!table.contains('\x1b'), "{table}");
    assert_eq!(
        table.matches("tessera stats: refresh ").count(),
        2,
        "{table}"
    );
    assert!(table.contains("refresh 2 every 0.1s"), "{table}");
    assert_eq!(table.matches("NODE/CORE").count(), 2, "{table}");

    // The same node twice via --node: two entries.
    let out = run(&[
        "stats",
        "-p",
        &p,
        "--json",
        "--interval",
        "0",
        "--node",
        &format!("127.0.0.1:{p}"),
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["nodes"].as_array().unwrap().len(), 2);

    // A node that does not answer: an error when printing once; shown as down while watching.
    let closed = free_port();
    let other = format!("127.0.0.1:{closed}");
    let out = run(&["stats", "-p", &p, "--interval", "0", "--node", &other]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("could not connect to {other}")),
        "{out:?}"
    );
    let out = run(&[
        "stats",
        "-p",
        &p,
        "--json",
        "--watch",
        "0.1",
        "--iterations",
        "2",
        "--interval",
        "0.1",
        "--node",
        &other,
    ]);
    assert!(out.status.success(), "{out:?}");
    for line in text(&out.stdout).lines() {
        let doc: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(doc["nodes"][0]["keys"], 25, "{doc}");
        assert_eq!(doc["nodes"][1]["addr"], other, "{doc}");
        let why = doc["nodes"][1]["error"].as_str().unwrap();
        assert!(why.contains("could not connect"), "{doc}");
    }

    // redis-server has no DM.STATS: a clear error and a failing status.
    let out = run(&["stats", "-p", &p, "--dmap", "users"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("DM.STATS users failed at 127.0.0.1:"), "{err}");
    assert!(err.contains("unknown command"), "{err}");
}

/// A tmux server of our own (its socket in a scratch directory), killed on drop.
struct Tmux {
    socket: PathBuf,
    _dir: TempDir,
}

impl Tmux {
    fn start(command: &str) -> Tmux {
        let dir = TempDir::new("tmux");
        let t = Tmux {
            socket: dir.0.join("sock"),
            _dir: dir,
        };
        let out = t.tmux(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "120",
            "-y",
            "40",
            command,
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        t
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// Types `s` literally.
    fn type_text(&self, s: &str) {
        assert!(self
            .tmux(&["send-keys", "-t", "t", "-l", s])
            .status
            .success());
    }

    /// Presses a named key (`Enter`, `Up`, `Tab`, `C-d`).
    fn key(&self, k: &str) {
        assert!(self.tmux(&["send-keys", "-t", "t", k]).status.success());
    }

    fn screen(&self) -> String {
        text(&self.tmux(&["capture-pane", "-p", "-t", "t"]).stdout)
    }

    fn screen_with_styles(&self) -> String {
        text(&self.tmux(&["capture-pane", "-p", "-e", "-t", "t"]).stdout)
    }

    /// Waits until the screen satisfies `ok`, failing with the screen after [`STEP_TIMEOUT`].
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last non-empty line on the screen (where the cursor's line is).
    fn wait_last_line(&self, expected: &str) {
        self.wait_for(&format!("last line {expected:?}"), |s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::trim_end)
                == Some(expected)
        });
    }

    fn wait_exit(&self) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        while self.tmux(&["has-session", "-t", "t"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the REPL did not exit; screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

fn repl_command(redis: &Redis, home: &Path) -> String {
    format!(
        "env -u TESSERA_HISTFILE -u XDG_STATE_HOME -u NO_COLOR HOME='{}' TERM=xterm '{BIN}' -p {}",
        home.display(),
        redis.port
    )
}

#[test]
fn repl_as_a_person_uses_it() {
    let Some(redis) = Redis::start() else { return };
    if !have("tmux") {
        eprintln!("SKIPPED: tmux is not installed");
        return;
    }
    let home = TempDir::new("home");
    let prompt = format!("127.0.0.1:{}>", redis.port);
    let t = Tmux::start(&repl_command(&redis, &home.0));
    t.wait_last_line(&prompt);

    t.type_text("SET greeting \"hello world\"");
    t.key("Enter");
    t.wait_for("OK", |s| s.lines().any(|l| l == "OK"));
    t.type_text("get greeting");
    t.key("Enter");
    t.wait_for("the value", |s| s.contains("\n\"hello world\"\n"));
    t.type_text("RPUSH list a b");
    t.key("Enter");
    t.wait_for("the push count", |s| s.contains("(integer) 2"));
    t.type_text("LRANGE list 0 -1");
    t.key("Enter");
    t.wait_for("the list", |s| s.contains("1) \"a\"\n2) \"b\""));

    // Errors are shown, styled, and the REPL goes on.
    t.type_text("INCR greeting");
    t.key("Enter");
    let s = t.wait_for("the error", |s| {
        s.contains("(error) ERR value is not an integer or out of range")
    });
    let styled = t.screen_with_styles();
    let line = styled
        .lines()
        .find(|l| l.contains("(error) ERR value"))
        .unwrap();
    assert!(
        line.contains("\x1b[") && line.contains("31"),
        "not red: {line:?}\n{s}"
    );
    assert!(
        !styled
            .lines()
            .any(|l| l.contains("(integer) 2") && l.contains("\x1b[")),
        "only errors are styled:\n{styled}"
    );

    // Up arrow recalls the previous line; Enter runs it again.
    t.key("Up");
    t.wait_last_line(&format!("{prompt} INCR greeting"));
    t.key("Up");
    t.wait_last_line(&format!("{prompt} LRANGE list 0 -1"));
    t.key("Enter");
    t.wait_for("the list twice", |s| s.matches("2) \"b\"").count() == 2);

    // Inside MULTI the prompt says so; EXEC runs the queue.
    t.type_text("MULTI");
    t.key("Enter");
    let tx_prompt = format!("127.0.0.1:{}(TX)>", redis.port);
    t.wait_last_line(&tx_prompt);
    t.type_text("INCR counter");
    t.key("Enter");
    t.wait_for("queued", |s| s.contains("QUEUED"));
    t.type_text("EXEC");
    t.key("Enter");
    t.wait_for("the exec reply", |s| s.contains("1) (integer) 1"));
    t.wait_last_line(&prompt);

    // Tab completes command names from the server's COMMAND table.
    t.type_text("DBSI");
    t.key("Tab");
    t.wait_last_line(&format!("{prompt} DBSIZE"));
    t.key("Enter");
    t.wait_for("dbsize", |s| s.contains("(integer) 3"));

    // `use` selects a map: the prompt shows it and `put` becomes DM.PUT on it.
    t.type_text("use users");
    t.key("Enter");
    let map_prompt = format!("127.0.0.1:{}[users]>", redis.port);
    t.wait_last_line(&map_prompt);
    t.type_text("put alice 42");
    t.key("Enter");
    t.wait_for("the translated command", |s| {
        s.contains("'DM.PUT', with args beginning with: 'users' 'alice' '42'")
    });
    t.type_text("get");
    t.key("Enter");
    t.wait_for("usage", |s| s.contains("(error) usage: get key"));
    t.type_text("use");
    t.key("Enter");
    t.wait_last_line(&prompt);

    // Secrets stay out of history.
    t.type_text("AUTH hunter2");
    t.key("Enter");
    t.wait_for("auth error", |s| s.contains("(error) ERR AUTH"));
    t.type_text("help");
    t.key("Enter");
    t.wait_for("help", |s| s.contains("use <dmap>"));
    t.type_text("quit");
    t.key("Enter");
    t.wait_exit();

    let history_file = home.0.join(".tessera_history");
    let history = std::fs::read_to_string(&history_file).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&history_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "history readable by others: {mode:o}");
    }
    assert!(history.contains("put alice 42"), "{history}");
    assert!(!history.contains("hunter2"), "{history}");

    // A new REPL recalls the last session's lines.
    let t = Tmux::start(&repl_command(&redis, &home.0));
    t.wait_last_line(&prompt);
    t.key("Up");
    t.wait_last_line(&format!("{prompt} quit"));
    t.key("Up");
    t.wait_last_line(&format!("{prompt} help"));
    t.key("Up");
    t.wait_last_line(&format!("{prompt} use"));
    // Ctrl-C abandons the line, Ctrl-D on an empty line leaves.
    t.key("C-c");
    t.wait_last_line(&prompt);
    t.key("C-d");
    t.wait_exit();
}

#[test]
fn repl_without_a_server_says_not_connected() {
    if !have("tmux") {
        eprintln!("SKIPPED: tmux is not installed");
        return;
    }
    let home = TempDir::new("home");
    let port = free_port();
    let t = Tmux::start(&format!(
        "env HOME='{}' TERM=xterm '{BIN}' -p {port}",
        home.0.display()
    ));
    t.wait_for("the refusal", |s| {
        s.contains(&format!("could not connect to 127.0.0.1:{port}"))
    });
    t.wait_last_line("not connected>");
    t.type_text("PING");
    t.key("Enter");
    t.wait_for("a second refusal", |s| {
        s.matches(&format!("could not connect to 127.0.0.1:{port}"))
            .count()
            == 2
    });
    t.type_text("exit");
    t.key("Enter");
    t.wait_exit();
}

/// Reads a child's stdout on a thread, line by line, so waits can be bounded.
fn line_reader(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Kills a child on drop (a test that panics leaves nothing running).
struct Killer(Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn subscribe_streams_messages_in_resp2_and_resp3() {
    let Some(redis) = Redis::start() else { return };
    let p = redis.port_arg();
    for (proto, channel) in [("2", "news2"), ("3", "news3")] {
        let mut args = vec!["-p", p.as_str(), "--no-raw"];
        if proto == "3" {
            args.push("--resp3");
        }
        args.extend(["SUBSCRIBE", channel]);
        let mut child = Killer(
            Command::new(BIN)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let lines = line_reader(&mut child.0);
        let next = || lines.recv_timeout(STEP_TIMEOUT).expect("a line in time");
        assert_eq!(next(), "1) \"subscribe\"");
        assert_eq!(next(), format!("2) \"{channel}\""));
        assert_eq!(next(), "3) (integer) 1");
        assert_eq!(next(), "Reading messages... (press Ctrl-C to quit)");
        let out = run(&["-p", &p, "PUBLISH", channel, "hello there"]);
        assert_eq!(text(&out.stdout), "1\n", "RESP{proto}");
        assert_eq!(next(), "1) \"message\"");
        assert_eq!(next(), format!("2) \"{channel}\""));
        assert_eq!(next(), "3) \"hello there\"");
    }
}

/// A one-connection fake server: reads whatever comes and answers the first read with `reply`
/// (nothing when empty), then keeps the socket open until the client leaves.
fn fake_server(reply: impl Into<Vec<u8>>) -> u16 {
    let reply = reply.into();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let _ = s.set_read_timeout(Some(STEP_TIMEOUT));
        let mut buf = [0u8; 1024];
        let mut answered = false;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                return;
            }
            if !answered && !reply.is_empty() {
                let _ = s.write_all(&reply);
                answered = true;
            }
        }
    });
    port
}

#[test]
fn silent_and_garbled_servers_fail_cleanly() {
    let port = fake_server(&b""[..]);
    let out = run(&["-p", &port.to_string(), "--timeout", "0.3", "PING"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("Error: 127.0.0.1:{port}: no reply within the timeout\n")
    );
    let port = fake_server(&b"HTTP/1.1 400 Bad Request\r\n\r\n"[..]);
    let out = run(&["-p", &port.to_string(), "PING"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("protocol error: unknown reply type byte 'H'"),
        "{out:?}"
    );
    // stats waits a bounded time even without --timeout (here shortened to keep the test quick).
    let port = fake_server(&b""[..]);
    let out = run(&["stats", "-p", &port.to_string(), "--timeout", "0.3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no reply within the timeout"),
        "{out:?}"
    );
    // A reply that claims more than the limits allow is refused, not allocated.
    let port = fake_server(&b"*99999999999\r\n"[..]);
    let out = run(&["-p", &port.to_string(), "PING"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("exceeds the limit"), "{out:?}");
}

#[test]
fn stats_watch_redraws_the_screen_like_top() {
    let Some(redis) = Redis::start() else { return };
    if !have("tmux") {
        eprintln!("SKIPPED: tmux is not installed");
        return;
    }
    // Bounded: 100 refreshes of 0.1 s end by themselves; the tmux server is killed on drop.
    let t = Tmux::start(&format!(
        "env TERM=xterm '{BIN}' stats -p {} --watch 0.1 --iterations 100 --interval 0.1",
        redis.port
    ));
    let s = t.wait_for("the third refresh", |s| s.contains("refresh 3 every 0.1s"));
    assert_eq!(
        s.matches("NODE/CORE").count(),
        1,
        "not redrawn in place:\n{s}"
    );
    assert!(s.contains(&format!("127.0.0.1:{}", redis.port)), "{s}");
}

#[test]
fn resp3_push_messages_before_a_reply_are_shown() {
    let Some(redis) = Redis::start() else { return };
    let p = redis.port_arg();
    // Client-side caching: our own SET invalidates the key we read, and the invalidation push
    // arrives ahead of a later reply; both must be shown, in order, and nothing may hang.
    let script = b"CLIENT TRACKING on\nGET k\nSET k 2\nPING\n";
    let out = run_with(&["-p", &p, "--resp3", "--no-raw"], script, &[]);
    assert!(out.status.success(), "{out:?}");
    let shown = text(&out.stdout);
    let invalidation = "1) \"invalidate\"\n2) 1) \"k\"\n";
    assert!(shown.starts_with("OK\n(nil)\n"), "{shown}");
    assert!(shown.contains(invalidation), "{shown}");
    assert!(shown.ends_with("PONG\n"), "{shown}");
    assert_eq!(shown.matches("OK\n").count(), 2, "{shown}");
}

#[test]
fn passwords_authenticate_in_resp2_and_resp3() {
    let Some(redis) = Redis::start_with(&["--requirepass", "s3cret"]) else {
        return;
    };
    let p = redis.port_arg();
    let out = run(&["-p", &p, "PING"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("NOAUTH Authentication required"),
        "{out:?}"
    );
    let out = run(&["-p", &p, "-a", "s3cret", "PING"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "PONG\n");
    let out = run(&[
        "-p",
        &p,
        "--password",
        "s3cret",
        "--user",
        "default",
        "--resp3",
        "PING",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "PONG\n");
    // From the environment, so the password stays out of `ps`.
    let out = run_with(&["-p", &p, "PING"], b"", &[("TESSERA_AUTH", "s3cret")]);
    assert!(out.status.success(), "{out:?}");
    let out = run(&["-p", &p, "--resp3", "-a", "wrong", "PING"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("HELLO failed at 127.0.0.1:"),
        "{out:?}"
    );
    assert!(text(&out.stderr).contains("WRONGPASS"), "{out:?}");
}

#[test]
fn a_session_reconnects_after_the_server_restarts() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let mut child = Killer(
        Command::new(BIN)
            .args(["-p", &redis.port_arg(), "--no-raw"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut input = child.0.stdin.take().unwrap();
    let lines = line_reader(&mut child.0);
    let next = || lines.recv_timeout(STEP_TIMEOUT).expect("a line in time");
    input.write_all(b"SET a 1\n").unwrap();
    assert_eq!(next(), "OK");
    redis.restart();
    // The old connection is gone: that command fails (and is not silently retried, since it
    // may have run), the next one reconnects.
    input.write_all(b"GET a\nSET a 2\nGET a\n").unwrap();
    assert_eq!(next(), "OK");
    assert_eq!(next(), "\"2\"");
    drop(input);
    let status = child.0.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "the failed command is reported in the exit status"
    );
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.starts_with(&format!("Error: 127.0.0.1:{}: ", redis.port)),
        "{err}"
    );
}
/// A tesserad child process (this package's server binary), killed by pid on drop.
struct Tesserad {
    child: Child,
    port: u16,
    cores: usize,
}

impl Tesserad {
    fn start() -> Tesserad {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(env!("CARGO_BIN_EXE_tesserad"))
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--cores", &cores.to_string(), "--log-level", "warn"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn tesserad");
            let mut t = Tesserad { child, port, cores };
            let deadline = Instant::now() + STEP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = t.child.try_wait() {
                    break;
                }
                if run(&["-p", &port.to_string(), "--timeout", "2", "PING"])
                    .status
                    .success()
                {
                    return t;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = t.child.kill();
        }
        panic!("tesserad did not start on any of 5 ports");
    }
}

impl Drop for Tesserad {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dmap_verbs_and_stats_against_tesserad() {
    let server = Tesserad::start();
    let p = server.port.to_string();
    let script = b"use users\nput alice 42\nget alice\nincr visits\nincr visits 5\n\
                   put bob \"x y\" EX 100\nget bob\nscan\ndel alice\nget alice\n";
    let out = run_with(&["-p", &p, "--no-raw"], script, &[]);
    assert_eq!(out.status.code(), Some(1), "the last get fails: {out:?}");
    let shown = text(&out.stdout);
    assert!(
        shown.starts_with("OK\n\"42\"\n(integer) 1\n(integer) 6\nOK\n\"x y\"\n"),
        "{shown}"
    );
    let scanned: Vec<&str> = shown
        .lines()
        .filter(|l| l.contains(") \"") && !l.contains("x y"))
        .collect();
    assert_eq!(scanned.len(), 3, "{shown}");
    for key in ["alice", "visits", "bob"] {
        assert!(
            shown.contains(&format!("\"{key}\"\n")),
            "{key} not scanned: {shown}"
        );
    }
    assert!(shown.ends_with("(integer) 1\n"), "{shown}");
    assert_eq!(text(&out.stderr), "(error) KEYNOTFOUND key not found\n");

    // Per-core lines from the shards section; the node's keys are the cores' keys.
    let out = run(&["stats", "-p", &p, "--json", "--interval", "0.2"]);
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = &doc["nodes"][0];
    let cores = node["cores"].as_array().unwrap();
    assert_eq!(cores.len(), server.cores, "{node}");
    let core_keys: u64 = cores.iter().map(|c| c["keys"].as_u64().unwrap()).sum();
    assert_eq!(node["keys"], 2, "{node}");
    assert_eq!(core_keys, 2, "{node}");
    assert!(node["memory_bytes"].as_u64().unwrap() > 0, "{node}");
    assert!(node["ops_per_sec"].as_f64().unwrap() > 0.0, "{node}");

    // scan stops at SCAN_KEYS_MAX (10,000) keys and says so.
    let mut script = String::from("use big\n");
    for i in 0..10_050 {
        script.push_str("put k");
        script.push_str(&i.to_string());
        script.push_str(" v\n");
    }
    assert!(run_with(&["-p", &p], script.as_bytes(), &[])
        .status
        .success());
    let out = run_with(&["-p", &p], b"use big\nscan\n", &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout).lines().count(), 10_000);
    assert_eq!(
        text(&out.stderr),
        "(stopped after 10000 keys: narrow it with scan <glob>)\n"
    );
    let out = run_with(&["-p", &p], b"use big\nscan k1000*\n", &[]);
    assert_eq!(
        text(&out.stdout).lines().count(),
        11,
        "k1000 and k10000..k10049: {out:?}"
    );

    // A map's own figures from DM.STATS.
    let out = run(&["stats", "-p", &p, "--dmap", "users", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["dmap"], "users");
    assert_eq!(doc["nodes"][0]["stats"]["length"], 2, "{doc}");
    // Every map at once.
    let out = run(&["stats", "-p", &p, "--dmap", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["dmap"], serde_json::Value::Null);
    assert_eq!(doc["nodes"][0]["stats"]["users"]["length"], 2, "{doc}");
    assert_eq!(doc["nodes"][0]["stats"]["big"]["length"], 10_050, "{doc}");
    let out = run(&["stats", "-p", &p, "--dmap"]);
    let table = text(&out.stdout);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(&rows[0][..2], ["NODE", "DMAP"], "{table}");
    let length = rows[0].iter().position(|c| *c == "LENGTH").unwrap();
    let users = rows.iter().find(|r| r[1] == "users").unwrap();
    assert_eq!(users[length], "2", "{table}");
}

#[test]
fn repl_against_tesserad() {
    if !have("tmux") {
        eprintln!("SKIPPED: tmux is not installed");
        return;
    }
    let server = Tesserad::start();
    let home = TempDir::new("home");
    let t = Tmux::start(&format!(
        "env -u TESSERA_HISTFILE -u XDG_STATE_HOME -u NO_COLOR HOME='{}' TERM=xterm '{BIN}' -p {}",
        home.0.display(),
        server.port
    ));
    let prompt = format!("127.0.0.1:{}>", server.port);
    t.wait_last_line(&prompt);
    // DM.* names come from tesserad's COMMAND table.
    t.type_text("dm.destr");
    t.key("Tab");
    t.wait_last_line(&format!("{prompt} dm.destroy"));
    t.key("C-u");
    t.type_text("use users");
    t.key("Enter");
    let map_prompt = format!("127.0.0.1:{}[users]>", server.port);
    t.wait_last_line(&map_prompt);
    t.type_text("put alice 42");
    t.key("Enter");
    t.wait_for("OK", |s| s.lines().any(|l| l == "OK"));
    t.type_text("get alice");
    t.key("Enter");
    t.wait_for("the value", |s| s.contains("\n\"42\"\n"));
    t.type_text("get nobody");
    t.key("Enter");
    t.wait_for("not found", |s| {
        s.contains("(error) KEYNOTFOUND key not found")
    });
    t.key("Up");
    t.key("Up");
    t.wait_last_line(&format!("{map_prompt} get alice"));
    t.key("C-u");
    t.type_text("quit");
    t.key("Enter");
    t.wait_exit();
}

#[test]
fn cluster_redirects_are_followed() {
    let Some(redis) = Redis::start() else { return };
    let p = redis.port_arg();
    assert!(run(&["-p", &p, "SET", "k", "v"]).status.success());
    // MOVED: the session moves to the named node and the command runs there.
    let moved = fake_server(format!("-MOVED 3999 127.0.0.1:{p}\r\n"));
    let out = run(&["-p", &moved.to_string(), "GET", "k"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "v\n");
    assert_eq!(
        text(&out.stderr),
        format!("-> Redirected to slot [3999] located at 127.0.0.1:{p}\n")
    );
    // ASK: the named node is asked once (after ASKING).
    let ask = fake_server(format!("-ASK 12 127.0.0.1:{p}\r\n"));
    let out = run(&["-p", &ask.to_string(), "--no-raw", "GET", "k"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "\"v\"\n");
    assert!(text(&out.stderr).contains("slot [12]"), "{out:?}");
}

#[test]
fn cluster_status_explains_servers_without_cluster_commands() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let p = redis.port_arg();
    for extra in [&[][..], &["--json"][..], &["--resp3"][..]] {
        let mut a = vec!["-p", &p, "cluster", "status"];
        a.extend_from_slice(extra);
        let out = run(&a);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("does not answer CLUSTER.MEMBERS (is it a Tessera node?)")
                && err.contains("unknown command"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    }
    // Any other `cluster` word is still a command for the server.
    let out = run(&["-p", &p, "cluster", "info"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("cluster support disabled"),
        "{out:?}"
    );
    // Nobody listening: a connection error, not a hang or a panic.
    let out = run(&["-p", &free_port().to_string(), "cluster", "status"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("could not connect"), "{out:?}");
}

#[test]
fn cluster_status_of_a_one_node_tesserad() {
    let server = Tesserad::start();
    let p = server.port.to_string();
    let out = run(&["-p", &p, "cluster", "status"]);
    assert!(out.status.success(), "{out:?}");
    let shown = text(&out.stdout);
    assert!(
        shown.starts_with(&format!("asked 127.0.0.1:{p}: epoch ")),
        "{shown}"
    );
    assert!(shown.contains(", 1 member(s)\n"), "{shown}");
    assert!(shown.contains("coordinator,myself"), "{shown}");
    let mut docs = Vec::new();
    for extra in [&[][..], &["--resp3"][..]] {
        let mut a = vec!["-p", &p, "cluster", "status", "--json"];
        a.extend_from_slice(extra);
        let out = run(&a);
        assert!(out.status.success(), "{out:?}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        docs.push(doc);
    }
    assert_eq!(docs[0], docs[1], "RESP2 and RESP3 read alike");
    let doc = &docs[0];
    let members = doc["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{doc}");
    let me = &members[0];
    assert_eq!(me["myself"], true);
    assert_eq!(me["alive"], true);
    assert_eq!(me["cores"], server.cores as u64);
    assert_eq!(me["slots"], 16384);
    assert_eq!(me["addr"].as_str().unwrap(), format!("127.0.0.1:{p}"));
    assert_eq!(me["id"].as_str().unwrap().len(), 40);
    // The ranges cover every slot once, in order, all on this node, over every core.
    let ranges = doc["ranges"].as_array().unwrap();
    let mut next = 0;
    let mut cores = std::collections::BTreeSet::new();
    for r in ranges {
        assert_eq!(r["first"], next, "{doc}");
        assert_eq!(r["node"], me["id"]);
        assert!(r["migrating_to"].is_null());
        cores.insert(r["core"].as_u64().unwrap());
        next = r["last"].as_u64().unwrap() + 1;
    }
    assert_eq!(next, 16384, "{doc}");
    assert_eq!(cores.len(), server.cores, "{doc}");
}
