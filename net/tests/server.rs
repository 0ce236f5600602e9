//! End-to-end tests: a node started in-process on 127.0.0.1:0 with 1 and with 2 cores, driven
//! with the `redis` crate (RESP2) and with raw bytes (RESP3, malformed input, pipelines).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use redis::Value;
use tessera_net::{Node, NodeConfig};

fn config(cores: usize) -> NodeConfig {
    let mut cfg = NodeConfig::default();
    cfg.net.port = 0;
    cfg.runtime.cores = cores;
    cfg
}

fn start(cores: usize) -> Node {
    Node::start(config(cores)).expect("node starts")
}

fn client(node: &Node) -> redis::Connection {
    let addr = node.local_addr().unwrap();
    let c = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let con = c
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    con
}

fn both(f: impl Fn(&Node)) {
    for cores in [1, 2] {
        let node = start(cores);
        f(&node);
        node.shutdown();
    }
}

/// A key owned by `core` (found by probing `prefix:N`).
fn key_on(node: &Node, core: usize, prefix: &str) -> String {
    let h = node.handle();
    (0..10_000)
        .map(|i| format!("{prefix}{core}:{i}"))
        .find(|k| h.owner(k.as_bytes()) == core % node.cores())
        .unwrap()
}

fn raw(node: &Node) -> TcpStream {
    let s = TcpStream::connect(node.local_addr().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends `req` and reads until the reply ends with `expected` (or fails on timeout).
fn exchange(s: &mut TcpStream, req: &[u8], expected: &[u8]) {
    s.write_all(req).unwrap();
    let got = read_exact_len(s, expected.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected),
        "reply to {:?}",
        String::from_utf8_lossy(req)
    );
}

fn read_exact_len(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    s.read_exact(&mut got).unwrap();
    got
}

/// Reads until EOF (the server closed) and returns everything.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn q<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

fn qerr(c: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<Value>(c) {
        Ok(v) => panic!("{args:?} should fail, got {v:?}"),
        Err(e) => {
            let code = e.code().unwrap_or("").to_owned();
            let detail = e.detail().unwrap_or("").to_owned();
            format!("{code} {detail}").trim().to_owned()
        }
    }
}

#[test]
fn strings() {
    both(|node| {
        let mut c = client(node);
        assert_eq!(q::<String>(&mut c, &["SET", "s", "v"]), "OK");
        assert_eq!(q::<String>(&mut c, &["GET", "s"]), "v");
        assert_eq!(q::<Option<String>>(&mut c, &["GET", "nope"]), None);
        assert_eq!(q::<Option<String>>(&mut c, &["SET", "s", "w", "NX"]), None);
        assert_eq!(q::<String>(&mut c, &["SET", "s", "w", "XX", "GET"]), "v");
        assert_eq!(q::<i64>(&mut c, &["SETNX", "s", "x"]), 0);
        assert_eq!(q::<String>(&mut c, &["SETEX", "e", "100", "v"]), "OK");
        assert!((1..=100).contains(&q::<i64>(&mut c, &["TTL", "e"])));
        assert_eq!(q::<String>(&mut c, &["PSETEX", "pe", "100000", "v"]), "OK");
        assert_eq!(q::<String>(&mut c, &["GETSET", "s", "z"]), "w");
        assert_eq!(q::<String>(&mut c, &["GETDEL", "s"]), "z");
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "s"]), 0);
        assert_eq!(q::<String>(&mut c, &["SET", "g", "1"]), "OK");
        assert_eq!(q::<String>(&mut c, &["GETEX", "g", "EX", "50"]), "1");
        assert!(q::<i64>(&mut c, &["TTL", "g"]) > 0);
        assert_eq!(q::<i64>(&mut c, &["APPEND", "a", "ab"]), 2);
        assert_eq!(q::<i64>(&mut c, &["APPEND", "a", "cd"]), 4);
        assert_eq!(q::<i64>(&mut c, &["STRLEN", "a"]), 4);
        assert_eq!(q::<String>(&mut c, &["GETRANGE", "a", "1", "2"]), "bc");
        assert_eq!(q::<i64>(&mut c, &["SETRANGE", "a", "1", "XY"]), 4);
        assert_eq!(q::<String>(&mut c, &["GET", "a"]), "aXYd");
        assert_eq!(q::<i64>(&mut c, &["INCR", "n"]), 1);
        assert_eq!(q::<i64>(&mut c, &["INCRBY", "n", "10"]), 11);
        assert_eq!(q::<i64>(&mut c, &["DECR", "n"]), 10);
        assert_eq!(q::<i64>(&mut c, &["DECRBY", "n", "3"]), 7);
        assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "n", "0.5"]), "7.5");
        assert_eq!(
            qerr(&mut c, &["INCR", "a"]),
            "ERR value is not an integer or out of range"
        );
        // multi-key commands span both cores with 2 cores
        let k0 = key_on(node, 0, "m");
        let k1 = key_on(node, 1, "m");
        assert_eq!(q::<String>(&mut c, &["MSET", &k0, "v0", &k1, "v1"]), "OK");
        assert_eq!(
            q::<Vec<Option<String>>>(&mut c, &["MGET", &k1, "missing", &k0, &k1]),
            vec![
                Some("v1".into()),
                None,
                Some("v0".into()),
                Some("v1".into())
            ]
        );
        assert_eq!(q::<i64>(&mut c, &["EXISTS", &k0, &k1, "missing", &k0]), 3);
        assert_eq!(q::<i64>(&mut c, &["TOUCH", &k0, &k1]), 2);
        assert_eq!(q::<i64>(&mut c, &["MSETNX", "{t}a", "1", "{t}b", "2"]), 1);
        assert_eq!(q::<i64>(&mut c, &["DEL", &k0, &k1, "missing"]), 2);
        assert_eq!(q::<i64>(&mut c, &["UNLINK", "{t}a", "{t}b"]), 2);
        // arity errors are Redis's texts
        assert_eq!(
            qerr(&mut c, &["GET"]),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            qerr(&mut c, &["SET", "x"]),
            "ERR wrong number of arguments for 'set' command"
        );
        assert!(qerr(&mut c, &["NOSUCHCMD", "a"]).starts_with("ERR unknown command 'NOSUCHCMD'"));
    });
}

#[test]
fn keys_and_scan_walk_every_core() {
    both(|node| {
        let mut c = client(node);
        assert_eq!(q::<String>(&mut c, &["FLUSHALL"]), "OK");
        for i in 0..300 {
            let _: () = q(&mut c, &["SET", &format!("k:{i}"), "v"]);
        }
        assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 300);
        let mut keys: Vec<String> = q(&mut c, &["KEYS", "k:1*"]);
        keys.sort();
        assert_eq!(keys.len(), 111); // k:1, k:10..19, k:100..199
        let mut seen = std::collections::HashSet::new();
        let mut cursor = "0".to_string();
        let mut rounds = 0;
        loop {
            let (next, batch): (String, Vec<String>) = q(&mut c, &["SCAN", &cursor, "COUNT", "50"]);
            seen.extend(batch);
            rounds += 1;
            assert!(rounds < 1000, "scan terminates");
            if next == "0" {
                break;
            }
            cursor = next;
        }
        assert_eq!(seen.len(), 300);
        assert_eq!(qerr(&mut c, &["SCAN", "notanumber"]), "ERR invalid cursor");
        assert_eq!(
            qerr(&mut c, &["SCAN", &(200u64 << 56).to_string()]),
            "ERR invalid cursor"
        );
        assert!(q::<Option<String>>(&mut c, &["RANDOMKEY"]).is_some());
        assert_eq!(q::<String>(&mut c, &["TYPE", "k:1"]), "string");
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k:1", "100"]), 1);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k:1", "200", "NX"]), 0);
        assert!(q::<i64>(&mut c, &["PTTL", "k:1"]) > 90_000);
        assert!(q::<i64>(&mut c, &["EXPIRETIME", "k:1"]) > 0);
        assert_eq!(q::<i64>(&mut c, &["PERSIST", "k:1"]), 1);
        assert_eq!(q::<i64>(&mut c, &["TTL", "k:1"]), -1);
        assert_eq!(qerr(&mut c, &["RENAME", "{r}a", "{r}b"]), "ERR no such key");
        let _: () = q(&mut c, &["SET", "{r}a", "1"]);
        assert_eq!(q::<String>(&mut c, &["RENAME", "{r}a", "{r}b"]), "OK");
        assert_eq!(q::<i64>(&mut c, &["RENAMENX", "{r}b", "{r}c"]), 1);
        if node.cores() == 2 {
            let k0 = key_on(node, 0, "rn");
            let k1 = key_on(node, 1, "rn");
            let _: () = q(&mut c, &["SET", &k0, "1"]);
            assert_eq!(
                qerr(&mut c, &["RENAME", &k0, &k1]),
                "CROSSSLOT Keys in request don't hash to the same slot"
            );
        }
        assert_eq!(q::<String>(&mut c, &["FLUSHDB"]), "OK");
        assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    });
}

#[test]
fn dmaps() {
    both(|node| {
        let mut c = client(node);
        assert_eq!(q::<String>(&mut c, &["DM.PUT", "m", "a", "1"]), "OK");
        assert_eq!(q::<String>(&mut c, &["DM.GET", "m", "a"]), "1");
        assert_eq!(
            qerr(&mut c, &["DM.GET", "m", "zz"]),
            "KEYNOTFOUND key not found"
        );
        assert_eq!(
            qerr(&mut c, &["DM.PUT", "m", "a", "2", "NX"]),
            "KEYFOUND key found"
        );
        assert_eq!(q::<i64>(&mut c, &["DM.INCR", "m", "n", "5"]), 5);
        assert_eq!(q::<i64>(&mut c, &["DM.DECR", "m", "n", "2"]), 3);
        assert_eq!(
            q::<Option<String>>(&mut c, &["DM.GETPUT", "m", "a", "9"]),
            Some("1".into())
        );
        assert_eq!(q::<i64>(&mut c, &["DM.CAS", "m", "a", "9", "10"]), 1);
        let _: Value = q(&mut c, &["DM.GETENTRY", "m", "a"]);
        let k0 = key_on(node, 0, "d");
        let k1 = key_on(node, 1, "d");
        let _: () = q(&mut c, &["DM.PUT", "m", &k0, "x"]);
        let _: () = q(&mut c, &["DM.PUT", "m", &k1, "x"]);
        // DM.DEL counts keys actually removed, across owners
        assert_eq!(q::<i64>(&mut c, &["DM.DEL", "m", &k0, &k1, "nope"]), 2);
        for i in 0..50 {
            let _: () = q(&mut c, &["DM.PUT", "scanme", &format!("k{i}"), "v"]);
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = "0".to_string();
        loop {
            let (next, keys): (String, Vec<String>) =
                q(&mut c, &["DM.SCAN", "scanme", &cursor, "COUNT", "7"]);
            seen.extend(keys);
            if next == "0" {
                break;
            }
            cursor = next;
        }
        assert_eq!(seen.len(), 50);
        let stats: Value = q(&mut c, &["DM.STATS", "scanme"]);
        let text = format!("{stats:?}");
        assert!(text.contains("50"), "{text}");
        assert_eq!(q::<String>(&mut c, &["DM.DESTROY", "scanme"]), "OK");
        assert_eq!(
            qerr(&mut c, &["DM.GET", "scanme", "k1"]),
            "KEYNOTFOUND key not found"
        );
        // DM.LOCK: a held lock makes a second locker wait, then fail at its deadline ...
        let token: String = q(&mut c, &["DM.LOCK", "locks", "l", "1", "PX", "60000"]);
        let mut c2 = client(node);
        let t = Instant::now();
        assert_eq!(
            qerr(&mut c2, &["DM.LOCK", "locks", "l", "0.2"]),
            "LOCKNOTACQUIRED lock not acquired"
        );
        assert!(t.elapsed() >= Duration::from_millis(150));
        // ... while the executor keeps serving others (the waiting is a timer, not a spin)
        let waiter = {
            let addr = node.local_addr().unwrap();
            std::thread::spawn(move || {
                let cl = redis::Client::open(format!("redis://{addr}/")).unwrap();
                let mut c3 = cl.get_connection().unwrap();
                redis::cmd("DM.LOCK")
                    .arg("locks")
                    .arg("l")
                    .arg("5")
                    .query::<String>(&mut c3)
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(q::<String>(&mut c2, &["PING"]), "PONG");
        assert_eq!(
            q::<String>(&mut c, &["DM.UNLOCK", "locks", "l", &token]),
            "OK"
        );
        assert!(
            waiter.join().unwrap().is_ok(),
            "the waiter got the lock after unlock"
        );
        assert_eq!(
            qerr(&mut c, &["DM.UNLOCK", "locks", "l", "bad"]),
            "NOSUCHLOCK no such lock"
        );
    });
}

#[test]
fn connection_and_server_commands() {
    both(|node| {
        let mut c = client(node);
        assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
        assert_eq!(q::<String>(&mut c, &["PING", "hi"]), "hi");
        assert_eq!(q::<String>(&mut c, &["ECHO", "e"]), "e");
        assert_eq!(q::<String>(&mut c, &["SELECT", "0"]), "OK");
        assert_eq!(
            qerr(&mut c, &["SELECT", "1"]),
            "ERR DB index is out of range"
        );
        let id: i64 = q(&mut c, &["CLIENT", "ID"]);
        assert!(id > 0);
        assert_eq!(q::<String>(&mut c, &["CLIENT", "SETNAME", "me"]), "OK");
        assert_eq!(q::<String>(&mut c, &["CLIENT", "GETNAME"]), "me");
        let list: String = q(&mut c, &["CLIENT", "LIST"]);
        assert!(list.contains("name=me"), "{list}");
        let info: String = q(&mut c, &["CLIENT", "INFO"]);
        assert!(info.contains(&format!("id={id} ")), "{info}");
        assert_eq!(q::<String>(&mut c, &["CLIENT", "NO-EVICT", "on"]), "OK");
        assert_eq!(
            q::<String>(&mut c, &["CLIENT", "SETINFO", "LIB-NAME", "x"]),
            "OK"
        );
        let info: String = q(&mut c, &["INFO"]);
        for section in [
            "# Server",
            "# Clients",
            "# Memory",
            "# Stats",
            "# Keyspace",
            "# Shards",
        ] {
            assert!(info.contains(section), "{section} in {info}");
        }
        assert!(info.contains("redis_version:"));
        let shards: String = q(&mut c, &["INFO", "shards"]);
        assert_eq!(
            shards.lines().filter(|l| l.starts_with("core")).count(),
            node.cores()
        );
        assert!(!shards.contains("# Server"));
        let cfg: HashMap<String, String> = q(&mut c, &["CONFIG", "GET", "save"]);
        assert_eq!(cfg.get("save").map(String::as_str), Some(""));
        let cfg: HashMap<String, String> = q(&mut c, &["CONFIG", "GET", "appendonly"]);
        assert_eq!(cfg.get("appendonly").map(String::as_str), Some("no"));
        assert_eq!(
            q::<String>(&mut c, &["CONFIG", "SET", "maxmemory", "100mb"]),
            "OK"
        );
        assert_eq!(
            q::<String>(
                &mut c,
                &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]
            ),
            "OK"
        );
        let cfg: HashMap<String, String> = q(&mut c, &["CONFIG", "GET", "maxmemory*"]);
        assert_eq!(cfg["maxmemory"], (100 * 1024 * 1024).to_string());
        assert_eq!(cfg["maxmemory-policy"], "allkeys-lru");
        assert!(qerr(&mut c, &["CONFIG", "SET", "maxmemory-policy", "bogus"]).starts_with("ERR"));
        assert!(qerr(&mut c, &["CONFIG", "SET", "nope", "1"]).starts_with("ERR Unknown option"));
        assert_eq!(
            q::<i64>(&mut c, &["COMMAND", "COUNT"]),
            q::<Vec<Value>>(&mut c, &["COMMAND"]).len() as i64
        );
        let info: Value = q(&mut c, &["COMMAND", "INFO", "get", "nosuch"]);
        let text = format!("{info:?}");
        assert!(
            text.contains("readonly") && text.ends_with("nil])"),
            "{text}"
        );
        let keys: Vec<String> = q(&mut c, &["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"]);
        assert_eq!(keys, vec!["a", "b"]);
        let keys: Vec<String> = q(&mut c, &["COMMAND", "GETKEYS", "DM.PUT", "m", "k", "v"]);
        assert_eq!(keys, vec!["k"]);
        let _: Value = q(&mut c, &["COMMAND", "DOCS", "get"]);
        let _: Value = q(&mut c, &["COMMAND"]);
        let (secs, _micros): (u64, u64) = q(&mut c, &["TIME"]);
        assert!(secs > 1_600_000_000);
        assert_eq!(q::<String>(&mut c, &["SLOWLOG", "RESET"]), "OK");
        assert_eq!(q::<i64>(&mut c, &["SLOWLOG", "LEN"]), 0);
        let _: Vec<Value> = q(&mut c, &["SLOWLOG", "GET", "5"]);
        let _: () = q(&mut c, &["SET", "mu", "some value"]);
        assert!(q::<i64>(&mut c, &["MEMORY", "USAGE", "mu"]) > 0);
        assert_eq!(
            q::<Option<i64>>(&mut c, &["MEMORY", "USAGE", "nokey"]),
            None
        );
        assert_eq!(q::<String>(&mut c, &["QUIT"]), "OK");
    });
}

#[test]
fn auth_and_noauth() {
    let mut cfg = config(2);
    cfg.net.requirepass = "s3cret".into();
    let node = Node::start(cfg).unwrap();
    let mut s = raw(&node);
    exchange(
        &mut s,
        b"GET a\r\n",
        b"-NOAUTH Authentication required.\r\n",
    );
    exchange(
        &mut s,
        b"AUTH wrong\r\n",
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    exchange(&mut s, b"AUTH s3cret\r\n", b"+OK\r\n");
    exchange(&mut s, b"GET a\r\n", b"$-1\r\n");
    exchange(&mut s, b"RESET\r\n", b"+RESET\r\n");
    exchange(&mut s, b"PING\r\n", b"-NOAUTH Authentication required.\r\n");
    let mut s2 = raw(&node);
    s2.write_all(b"HELLO 3 AUTH default s3cret\r\n").unwrap();
    let mut buf = [0u8; 512];
    let n = s2.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"%7\r\n"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    exchange(&mut s2, b"PING\r\n", b"+PONG\r\n");
    let addr = node.local_addr().unwrap();
    let cl = redis::Client::open(format!("redis://:s3cret@{addr}/")).unwrap();
    let mut c = cl.get_connection().unwrap();
    assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
    node.shutdown();
}

#[test]
fn resp3_replies() {
    both(|node| {
        let mut s = raw(node);
        exchange(
            &mut s,
            b"HELLO 4\r\n",
            b"-NOPROTO unsupported protocol version\r\n",
        );
        s.write_all(b"HELLO 3\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        let hello = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            hello.starts_with("%7\r\n") && hello.contains(":3\r\n"),
            "{hello}"
        );
        exchange(&mut s, b"GET missing\r\n", b"_\r\n");
        exchange(
            &mut s,
            b"SET f 1.5\r\nINCRBYFLOAT f 1\r\n",
            b"+OK\r\n$3\r\n2.5\r\n",
        );
        exchange(
            &mut s,
            b"CONFIG GET appendonly\r\n",
            b"%1\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
        );
        exchange(&mut s, b"HELLO 2\r\n", b"*14\r\n");
        let _ = s.read(&mut buf).unwrap();
    });
}

#[test]
fn malformed_input_gets_errors_or_closes() {
    both(|node| {
        // unrecoverable framing: error reply, then the connection closes
        for (req, err) in [
            (
                &b"*abc\r\n"[..],
                &b"-ERR Protocol error: invalid multibulk length\r\n"[..],
            ),
            (
                b"*1\r\n$x\r\n",
                b"-ERR Protocol error: invalid bulk length\r\n",
            ),
            (
                b"*1\r\n+foo\r\n",
                b"-ERR Protocol error: expected '$', got '+'\r\n",
            ),
            (
                b"*2000000000\r\n",
                b"-ERR Protocol error: invalid multibulk length\r\n",
            ),
            (
                b"*1\r\n$2000000000\r\n",
                b"-ERR Protocol error: invalid bulk length\r\n",
            ),
            (
                b"SET \"a b\r\n",
                b"-ERR Protocol error: unbalanced quotes in request\r\n",
            ),
        ] {
            let mut s = raw(node);
            s.write_all(req).unwrap();
            let got = read_to_close(&mut s);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(err),
                "request {:?}",
                String::from_utf8_lossy(req)
            );
        }
        // a declared huge bulk that never arrives does not block anybody else
        let mut hog = raw(node);
        hog.write_all(b"*2\r\n$3\r\nGET\r\n$100000000\r\nabc")
            .unwrap();
        let mut c = client(node);
        assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
        // recoverable errors keep the connection
        let mut s = raw(node);
        exchange(
            &mut s,
            b"*1\r\n$3\r\nGET\r\n",
            b"-ERR wrong number of arguments for 'get' command\r\n",
        );
        exchange(&mut s, b"PING\r\n", b"+PONG\r\n");
        exchange(&mut s, b"\r\n\r\nPING\r\n", b"+PONG\r\n");
    });
}

#[test]
fn partial_frames_split_at_every_byte() {
    both(|node| {
        let k0 = key_on(node, 0, "p");
        let k1 = key_on(node, 1, "p");
        let req = format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{k0}\r\n$2\r\nv0\r\n*3\r\n$3\r\nSET\r\n${}\r\n{k1}\r\n$2\r\nv1\r\n*3\r\n$4\r\nMGET\r\n${}\r\n{k0}\r\n${}\r\n{k1}\r\nPING\r\n",
            k0.len(),
            k1.len(),
            k0.len(),
            k1.len()
        );
        let expected = b"+OK\r\n+OK\r\n*2\r\n$2\r\nv0\r\n$2\r\nv1\r\n+PONG\r\n";
        let req = req.as_bytes();
        for split in 1..req.len() {
            let mut s = raw(node);
            s.set_nodelay(true).unwrap();
            s.write_all(&req[..split]).unwrap();
            s.flush().unwrap();
            if split % 7 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            s.write_all(&req[split..]).unwrap();
            let got = read_exact_len(&mut s, expected.len());
            assert_eq!(got, expected, "split at {split}");
        }
    });
}

#[test]
fn ten_thousand_command_pipeline_keeps_order() {
    both(|node| {
        let mut c = client(node);
        let mut pipe = redis::pipe();
        let n = 10_000;
        for i in 0..n {
            let k = format!("pl:{}", i % 500);
            match i % 5 {
                0 => pipe.cmd("SET").arg(&k).arg(i),
                1 => pipe.cmd("GET").arg(&k),
                2 => pipe.cmd("INCR").arg(format!("ctr:{}", i % 7)),
                3 => pipe
                    .cmd("MGET")
                    .arg(&k)
                    .arg(format!("pl:{}", (i + 1) % 500)),
                _ => pipe.cmd("ECHO").arg(i),
            };
        }
        let replies: Vec<Value> = pipe.query(&mut c).unwrap();
        assert_eq!(replies.len(), n);
        let mut model: HashMap<String, String> = HashMap::new();
        let mut ctr: HashMap<usize, i64> = HashMap::new();
        for (i, r) in replies.iter().enumerate() {
            let k = format!("pl:{}", i % 500);
            let as_s = |v: &Value| match v {
                Value::BulkString(b) => Some(String::from_utf8(b.clone()).unwrap()),
                Value::Nil => None,
                Value::Okay => Some("OK".into()),
                other => panic!("unexpected {other:?} at {i}"),
            };
            match i % 5 {
                0 => {
                    assert_eq!(r, &Value::Okay, "at {i}");
                    model.insert(k, i.to_string());
                }
                1 => assert_eq!(as_s(r), model.get(&k).cloned(), "at {i}"),
                2 => {
                    let e = ctr.entry(i % 7).or_insert(0);
                    *e += 1;
                    assert_eq!(r, &Value::Int(*e), "at {i}");
                }
                3 => {
                    let Value::Array(v) = r else {
                        panic!("array at {i}")
                    };
                    assert_eq!(as_s(&v[0]), model.get(&k).cloned(), "at {i}");
                    let k2 = format!("pl:{}", (i + 1) % 500);
                    assert_eq!(as_s(&v[1]), model.get(&k2).cloned(), "at {i}");
                }
                _ => assert_eq!(as_s(r), Some(i.to_string()), "at {i}"),
            }
        }
        if node.cores() == 2 {
            let info: String = q(&mut c, &["INFO", "stats"]);
            let batches: u64 = info
                .lines()
                .find_map(|l| l.strip_prefix("cross_core_batches:"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            // 10k commands, half of them remote, travel in far fewer messages.
            assert!(batches > 0 && batches < 2_000, "batches {batches}");
        }
    });
}

/// The core a connection is served by (from CLIENT INFO's `core=` field).
fn core_of(c: &mut redis::Connection) -> usize {
    let info: String = q(c, &["CLIENT", "INFO"]);
    info.split_whitespace()
        .find_map(|f| f.strip_prefix("core="))
        .unwrap()
        .parse()
        .unwrap()
}

/// A connection served by `core` (connections are spread by the kernel's SO_REUSEPORT hash).
fn client_on(node: &Node, core: usize) -> redis::Connection {
    for _ in 0..200 {
        let mut c = client(node);
        if core_of(&mut c) == core {
            return c;
        }
    }
    panic!("no connection landed on core {core}");
}

fn shard_counter(c: &mut redis::Connection, core: usize, name: &str) -> u64 {
    let info: String = q(c, &["INFO", "shards"]);
    let line = info
        .lines()
        .find(|l| l.starts_with(&format!("core{core}:")))
        .unwrap()
        .to_owned();
    line.split(':')
        .nth(1)
        .unwrap()
        .split(',')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap()
        .parse()
        .unwrap()
}

fn executor_threads() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = t.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.starts_with("tessera-core-") {
            // A thread of another test's node may exit between the listing and this read.
            let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
                continue;
            };
            let Some(cpus) = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            else {
                continue;
            };
            out.push((comm.trim().to_owned(), cpus.trim().to_owned()));
        }
    }
    out
}

#[test]
fn shape_two_pinned_executors_and_owner_only_writes() {
    let node = start(2);
    // Other tests run in this process too: count threads of this node by their core index.
    // Another test's executor thread may be named but not yet pinned (it pins itself right
    // after it starts): wait, bounded, until every executor thread is pinned.
    let pinned = |cpus: &String| !cpus.contains(',') && !cpus.contains('-');
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut threads = executor_threads();
    while !threads.iter().all(|(_, c)| pinned(c)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        threads = executor_threads();
    }
    let mine: Vec<&(String, String)> = threads.iter().collect();
    assert!(mine.len() >= 2, "{threads:?}");
    for (name, cpus) in &mine {
        assert!(
            !cpus.contains(',') && !cpus.contains('-'),
            "{name} pinned to one CPU: {cpus}"
        );
    }
    let allowed = core_affinity::get_core_ids().map_or(0, |v| v.len());
    let c0: Vec<&String> = mine
        .iter()
        .filter(|(n, _)| n.starts_with("tessera-core-0-"))
        .map(|(_, c)| c)
        .collect();
    let c1: Vec<&String> = mine
        .iter()
        .filter(|(n, _)| n.starts_with("tessera-core-1-"))
        .map(|(_, c)| c)
        .collect();
    assert!(!c0.is_empty() && !c1.is_empty());
    if allowed >= 2 {
        assert!(
            c0.iter().all(|a| c1.iter().all(|b| a != b)),
            "core 0 {c0:?} and core 1 {c1:?} differ"
        );
    }
    // Writes to a key execute only on its owner, whichever core the client is on.
    let mut on0 = client_on(&node, 0);
    let mut on1 = client_on(&node, 1);
    for owner in [0usize, 1] {
        let key = key_on(&node, owner, "shape");
        let other = 1 - owner;
        let before_owner = shard_counter(&mut on0, owner, "executed");
        let before_other = shard_counter(&mut on0, other, "executed");
        for i in 0..100 {
            let _: () = q(&mut on0, &["SET", &key, &i.to_string()]);
            let _: () = q(&mut on1, &["SET", &key, &i.to_string()]);
        }
        assert_eq!(
            shard_counter(&mut on0, owner, "executed") - before_owner,
            200
        );
        assert_eq!(shard_counter(&mut on0, other, "executed"), before_other);
        let keys_owner = shard_counter(&mut on1, owner, "keys");
        assert!(keys_owner >= 1);
    }
    node.shutdown();
}

#[test]
fn pubsub_across_cores() {
    let node = start(2);
    let mut sub = client_on(&node, 0);
    let mut publisher = client_on(&node, 1);
    let mut ps = sub.as_pubsub();
    ps.subscribe("news").unwrap();
    ps.psubscribe("ne*").unwrap();
    ps.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n: i64 = q(&mut publisher, &["PUBLISH", "news", "hello"]);
    assert_eq!(n, 2, "channel and pattern subscriber");
    let m = ps.get_message().unwrap();
    assert_eq!(m.get_channel_name(), "news");
    assert_eq!(m.get_payload::<String>().unwrap(), "hello");
    let m = ps.get_message().unwrap();
    assert_eq!(m.get_pattern::<String>().unwrap(), "ne*");
    let chans: Vec<String> = q(&mut publisher, &["PUBSUB", "CHANNELS"]);
    assert_eq!(chans, vec!["news"]);
    let numsub: (String, i64) = q(&mut publisher, &["PUBSUB", "NUMSUB", "news"]);
    assert_eq!(numsub, ("news".into(), 1));
    assert_eq!(q::<i64>(&mut publisher, &["PUBSUB", "NUMPAT"]), 1);
    drop(ps);
    drop(sub);

    // RESP2 subscribe mode allows only (P)(UN)SUBSCRIBE, PING, QUIT, RESET
    let mut s = raw(&node);
    exchange(
        &mut s,
        b"SUBSCRIBE a\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n",
    );
    exchange(
        &mut s,
        b"GET x\r\n",
        b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
    );
    exchange(&mut s, b"PING\r\n", b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    exchange(
        &mut s,
        b"UNSUBSCRIBE\r\n",
        b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n",
    );
    exchange(&mut s, b"GET x\r\n", b"$-1\r\n");

    // RESP3: confirmations and messages are pushes, other commands keep working
    let mut s = raw(&node);
    s.write_all(b"HELLO 3\r\n").unwrap();
    let mut buf = [0u8; 256];
    let _ = s.read(&mut buf).unwrap();
    exchange(
        &mut s,
        b"SUBSCRIBE c3\r\n",
        b">3\r\n$9\r\nsubscribe\r\n$2\r\nc3\r\n:1\r\n",
    );
    exchange(&mut s, b"GET x\r\n", b"_\r\n");
    let _: i64 = q(&mut publisher, &["PUBLISH", "c3", "m"]);
    let got = read_exact_len(
        &mut s,
        b">3\r\n$7\r\nmessage\r\n$2\r\nc3\r\n$1\r\nm\r\n".len(),
    );
    assert_eq!(got, b">3\r\n$7\r\nmessage\r\n$2\r\nc3\r\n$1\r\nm\r\n");
    node.shutdown();
}

#[test]
fn slow_subscriber_is_disconnected_not_the_node() {
    let mut cfg = config(2);
    cfg.net.pubsub_pending_max = 8;
    let node = Node::start(cfg).unwrap();
    let mut slow = raw(&node);
    exchange(
        &mut slow,
        b"SUBSCRIBE firehose\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$8\r\nfirehose\r\n:1\r\n",
    );
    let mut publisher = client(&node);
    let payload = "x".repeat(256 * 1024);
    let t = Instant::now();
    let mut receivers = 1;
    while receivers > 0 {
        receivers = q::<i64>(&mut publisher, &["PUBLISH", "firehose", &payload]);
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "subscriber never dropped"
        );
    }
    let numsub: (String, i64) = q(&mut publisher, &["PUBSUB", "NUMSUB", "firehose"]);
    assert_eq!(numsub.1, 0);
    assert_eq!(q::<String>(&mut publisher, &["PING"]), "PONG");
    node.shutdown();
}

#[test]
fn transactions_on_one_slot() {
    both(|node| {
        let mut c = client(node);
        let mut s = raw(node);
        exchange(&mut s, b"EXEC\r\n", b"-ERR EXEC without MULTI\r\n");
        exchange(&mut s, b"MULTI\r\n", b"+OK\r\n");
        exchange(
            &mut s,
            b"MULTI\r\n",
            b"-ERR MULTI calls can not be nested\r\n",
        );
        exchange(&mut s, b"SET {u}a 1\r\n", b"+QUEUED\r\n");
        exchange(&mut s, b"INCR {u}b\r\n", b"+QUEUED\r\n");
        exchange(&mut s, b"GET {u}a\r\n", b"+QUEUED\r\n");
        exchange(&mut s, b"EXEC\r\n", b"*3\r\n+OK\r\n:1\r\n$1\r\n1\r\n");
        // keys of different slots (and, with 2 cores, of different cores) run too: a node
        // is standalone Redis to its clients
        exchange(
            &mut s,
            b"MULTI\r\nSET a 1\r\nSET b 2\r\nEXEC\r\nMGET a b\r\n",
            b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n*2\r\n$1\r\n1\r\n$1\r\n2\r\n",
        );
        // a bad command aborts
        exchange(&mut s, b"MULTI\r\nGET\r\nEXEC\r\n", b"+OK\r\n-ERR wrong number of arguments for 'get' command\r\n-EXECABORT Transaction discarded because of previous errors.\r\n");
        exchange(
            &mut s,
            b"MULTI\r\nSET {u}a 5\r\nDISCARD\r\nGET {u}a\r\n",
            b"+OK\r\n+QUEUED\r\n+OK\r\n$1\r\n1\r\n",
        );
        // WATCH: a change by another client makes EXEC return a null array
        exchange(&mut s, b"WATCH {u}a\r\n", b"+OK\r\n");
        let _: () = q(&mut c, &["SET", "{u}a", "changed"]);
        exchange(
            &mut s,
            b"MULTI\r\nSET {u}a mine\r\nEXEC\r\n",
            b"+OK\r\n+QUEUED\r\n*-1\r\n",
        );
        assert_eq!(q::<String>(&mut c, &["GET", "{u}a"]), "changed");
        exchange(
            &mut s,
            b"WATCH {u}a\r\nMULTI\r\nSET {u}a mine\r\nEXEC\r\n",
            b"+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n",
        );
        // the redis crate's atomic pipeline
        let (a, b): (i64, i64) = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg("{v}x")
            .cmd("INCR")
            .arg("{v}x")
            .query(&mut c)
            .unwrap();
        assert_eq!((a, b), (1, 2));
    });
}

#[test]
fn embedding_handle_and_no_listener() {
    let mut cfg = config(2);
    cfg.net.listen = false;
    let node = Node::start(cfg).unwrap();
    assert!(node.local_addr().is_none());
    let h = node.handle();
    let b = |s: &str| bytes::Bytes::from(s.to_owned());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let h = h.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let k = format!("e{t}:{i}");
                    assert_eq!(
                        h.execute(vec![b("SET"), b(&k), b("v")]),
                        tessera_engine::Reply::Ok
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        h.execute(vec![b("DBSIZE")]),
        tessera_engine::Reply::Int(800)
    );
    assert_eq!(
        h.execute(vec![b("GET"), b("e1:7")]),
        tessera_engine::Reply::Bulk(b("v"))
    );
    let cmd = tessera_engine::Command::parse(&[b("DEL"), b("e0:1"), b("e3:1"), b("zz")]).unwrap();
    assert_eq!(h.execute_command(cmd), tessera_engine::Reply::Int(2));
    let rx = h.subscribe(vec![b("chan")]);
    assert_eq!(h.publish(b("chan"), b("msg")), 1);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        (b("chan"), b("msg"))
    );
    let token = h.execute(vec![b("DM.LOCK"), b("m"), b("k"), b("1")]);
    assert!(
        matches!(token, tessera_engine::Reply::Simple(_)),
        "{token:?}"
    );
    let again = h.execute(vec![b("DM.LOCK"), b("m"), b("k"), b("0.05")]);
    assert!(again.is_error());
    node.shutdown();
}

#[test]
fn shutdown_finishes_in_flight_requests() {
    let node = start(2);
    let addr = node.local_addr().unwrap();
    let mut c = client(&node);
    let mut pipe = redis::pipe();
    for i in 0..5000 {
        pipe.cmd("SET").arg(format!("sd:{i}")).arg(i).ignore();
    }
    pipe.cmd("DBSIZE");
    let (n,): (i64,) = pipe.query(&mut c).unwrap();
    assert_eq!(n, 5000);
    let idle = raw(&node);
    let t = Instant::now();
    node.shutdown();
    assert!(t.elapsed() < Duration::from_secs(5));
    drop(idle);
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");
}

#[test]
fn background_expiry_runs_without_client_access() {
    let mut cfg = config(2);
    cfg.net.background_tick_ms = 10;
    let node = Node::start(cfg).unwrap();
    let mut c = client(&node);
    for i in 0..200 {
        let _: () = q(&mut c, &["SET", &format!("ttl:{i}"), "v", "PX", "20"]);
    }
    let _: () = q(&mut c, &["SET", "keeper", "v"]);
    // Nothing reads these keys: only the background task can remove them.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut expired = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        expired = (0..node.cores())
            .map(|core| shard_counter(&mut c, core, "expired_keys"))
            .sum::<u64>();
        if expired == 200 {
            break;
        }
    }
    assert_eq!(expired, 200, "active expiry removed every volatile key");
    let ticks_work: u64 = (0..node.cores())
        .map(|core| shard_counter(&mut c, core, "expired_active"))
        .sum();
    assert!(ticks_work >= 200, "{ticks_work}");
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 1);
    node.shutdown();
}

#[test]
fn client_kill_and_shutdown_command() {
    let node = start(2);
    let mut victim = client(&node);
    let id: i64 = q(&mut victim, &["CLIENT", "ID"]);
    let mut admin = client(&node);
    assert_eq!(
        q::<i64>(&mut admin, &["CLIENT", "KILL", "ID", &id.to_string()]),
        1
    );
    assert!(
        redis::cmd("PING").query::<String>(&mut victim).is_err(),
        "killed connection is closed"
    );
    assert_eq!(q::<i64>(&mut admin, &["CLIENT", "KILL", "ID", "999999"]), 0);
    let requested = node.shutdown_requested();
    let mut s = raw(&node);
    s.write_all(b"SHUTDOWN\r\n").unwrap();
    assert!(
        read_to_close(&mut s).is_empty(),
        "SHUTDOWN closes without a reply"
    );
    requested
        .recv_timeout(Duration::from_secs(5))
        .expect("the process owner is told");
    node.shutdown();
}

#[test]
fn resp3_through_the_redis_crate() {
    both(|node| {
        let addr = node.local_addr().unwrap();
        let cl = redis::Client::open(format!("redis://{addr}/?protocol=resp3")).unwrap();
        let mut c = cl
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap();
        let k0 = key_on(node, 0, "r3");
        let k1 = key_on(node, 1, "r3");
        assert_eq!(q::<String>(&mut c, &["MSET", &k0, "a", &k1, "b"]), "OK");
        assert_eq!(
            q::<Vec<Option<String>>>(&mut c, &["MGET", &k0, "none", &k1]),
            vec![Some("a".into()), None, Some("b".into())]
        );
        let v: Value = q(&mut c, &["GET", "none"]);
        assert_eq!(v, Value::Nil);
        let cfg: Value = q(&mut c, &["CONFIG", "GET", "appendonly"]);
        assert!(matches!(cfg, Value::Map(_)), "{cfg:?}");
        let f: Value = q(&mut c, &["INCRBYFLOAT", "r3f", "1.5"]);
        assert!(
            matches!(f, Value::BulkString(_) | Value::Double(_)),
            "{f:?}"
        );
        let stats: Value = q(&mut c, &["DM.STATS"]);
        assert!(matches!(stats, Value::Map(_)), "{stats:?}");
    });
}

#[test]
fn random_bytes_never_take_the_node_down() {
    let node = start(2);
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"*$+-:\r\n0123456789-GETSETPINGDM.abc \"'\\x{}";
    for round in 0..200 {
        let mut s = raw(&node);
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let len = (next() % 512) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                let r = next();
                if r % 4 == 0 {
                    r as u8
                } else {
                    alphabet[(r as usize >> 8) % alphabet.len()]
                }
            })
            .collect();
        let _ = s.write_all(&bytes);
        let mut sink = [0u8; 4096];
        // whatever comes back (errors, replies, a close) is fine; the node must stay up
        let _ = s.read(&mut sink);
        if round % 50 == 0 {
            let mut c = client(&node);
            assert_eq!(q::<String>(&mut c, &["PING"]), "PONG", "round {round}");
        }
    }
    let mut c = client(&node);
    assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
    node.shutdown();
}

#[test]
fn connections_max_is_enforced() {
    let mut cfg = config(1);
    cfg.net.connections_max = 2;
    let node = Node::start(cfg).unwrap();
    let mut first = raw(&node);
    let mut second = raw(&node);
    exchange(&mut first, b"PING\r\n", b"+PONG\r\n");
    exchange(&mut second, b"PING\r\n", b"+PONG\r\n");
    let mut c = raw(&node);
    assert_eq!(
        read_to_close(&mut c),
        b"-ERR max number of clients reached\r\n"
    );
    drop(first);
    // the slot frees once the server has seen the close
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut probe = raw(&node);
        probe.write_all(b"PING\r\n").unwrap();
        let mut buf = [0u8; 64];
        let n = probe.read(&mut buf).unwrap_or(0);
        if &buf[..n] == b"+PONG\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
    node.shutdown();
}

#[test]
fn many_clients_hammering_both_cores_with_a_tiny_mesh() {
    // The smallest mesh (16 batches per core) and 40 clients: replies stay correct under
    // concurrent cross-core traffic. Whether a sender meets a full channel depends on timing
    // (INFO shards `mesh_full` counts it; the full-channel error itself is a mailbox unit test).
    let mut cfg = config(2);
    cfg.runtime.mesh_capacity = 16;
    let node = Node::start(cfg).unwrap();
    let addr = node.local_addr().unwrap();
    let clients = 40;
    let rounds = 5;
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            std::thread::spawn(move || {
                let cl = redis::Client::open(format!("redis://{addr}/")).unwrap();
                let mut c = cl.get_connection().unwrap();
                for round in 0..rounds {
                    let mut pipe = redis::pipe();
                    for i in 0..100 {
                        pipe.cmd("INCR").arg(format!("ctr:{}", i % 10)).ignore();
                        pipe.cmd("MSET")
                            .arg(format!("t{t}:a{i}"))
                            .arg(round)
                            .arg(format!("t{t}:b{i}"))
                            .arg(round)
                            .ignore();
                    }
                    pipe.cmd("MGET")
                        .arg(format!("t{t}:a7"))
                        .arg(format!("t{t}:b7"));
                    let (v,): (Vec<i64>,) = pipe.query(&mut c).unwrap();
                    assert_eq!(v, vec![round, round]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = client(&node);
    for i in 0..10 {
        assert_eq!(
            q::<i64>(&mut c, &["GET", &format!("ctr:{i}")]),
            clients * rounds * 10
        );
    }
    let full: u64 = (0..2)
        .map(|core| shard_counter(&mut c, core, "mesh_full"))
        .sum();
    eprintln!("sends that met a full mesh channel: {full}");
    node.shutdown();
}

#[test]
fn embedding_scan_walks_every_core() {
    let mut cfg = config(2);
    cfg.net.listen = false;
    let node = Node::start(cfg).unwrap();
    let h = node.handle();
    let b = |s: &str| bytes::Bytes::from(s.to_owned());
    for i in 0..100 {
        h.execute(vec![b("SET"), b(&format!("s:{i}")), b("v")]);
        h.execute(vec![b("DM.PUT"), b("m"), b(&format!("d:{i}")), b("v")]);
    }
    let walk = |make: &dyn Fn(u64) -> tessera_engine::Command| {
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0u64;
        for _ in 0..1000 {
            let tessera_engine::Reply::Array(v) = h.execute_command(make(cursor)) else {
                panic!("scan reply");
            };
            let tessera_engine::Reply::Bulk(next) = &v[0] else {
                panic!("cursor")
            };
            if let tessera_engine::Reply::Array(keys) = &v[1] {
                for k in keys {
                    seen.insert(format!("{k:?}"));
                }
            }
            cursor = std::str::from_utf8(next).unwrap().parse().unwrap();
            if cursor == 0 {
                break;
            }
        }
        seen.len()
    };
    let scan = |cursor| tessera_engine::Command::Scan {
        cursor,
        pattern: None,
        count: 7,
        type_filter: None,
    };
    assert_eq!(walk(&scan), 100);
    let dm_scan = |cursor| tessera_engine::Command::DmScan {
        map: b("m"),
        cursor,
        pattern: None,
        count: 7,
    };
    assert_eq!(walk(&dm_scan), 100);
    node.shutdown();
}

/// Sends MULTI, each command (each must answer QUEUED), then EXEC; returns EXEC's reply.
fn transaction(c: &mut redis::Connection, cmds: &[&[&str]]) -> Value {
    let _: () = q(c, &["MULTI"]);
    for args in cmds {
        assert_eq!(q::<String>(c, args), "QUEUED", "{args:?}");
    }
    q(c, &["EXEC"])
}

fn bulk_str(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        other => panic!("not a string: {other:?}"),
    }
}

fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(v) => v,
        other => panic!("not an array: {other:?}"),
    }
}

#[test]
fn multi_queues_every_command() {
    both(|node| {
        let mut c = client(node);
        let k0 = key_on(node, 0, "mq");
        let k1 = key_on(node, 1, "mq");
        let got = items(transaction(
            &mut c,
            &[
                &["PING"],
                &["ECHO", "hi"],
                &["SET", &k0, "1"],
                &["SET", &k1, "2"],
                &["MGET", &k0, &k1, "missing"],
                &["DBSIZE"],
                &["INCR", &k0],
                &["TIME"],
                &["INFO", "keyspace"],
                &["DM.PUT", "m", &k1, "v"],
                &["DM.GET", "m", &k1],
                &["CONFIG", "GET", "maxmemory-policy"],
                &["CLIENT", "ID"],
                &["PUBLISH", "nobody", "x"],
                &["DEL", &k0, &k1, "missing"],
                &["EXISTS", &k0, &k1],
                &["SCAN", "0", "COUNT", "1000"],
                &["GET", &k0],
            ],
        ));
        assert_eq!(got.len(), 18, "{got:?}");
        assert_eq!(bulk_str(&got[0]), "PONG");
        assert_eq!(bulk_str(&got[1]), "hi");
        assert_eq!(bulk_str(&got[2]), "OK");
        assert_eq!(bulk_str(&got[3]), "OK");
        assert_eq!(
            got[4],
            Value::Array(vec![
                Value::BulkString(b"1".to_vec()),
                Value::BulkString(b"2".to_vec()),
                Value::Nil
            ])
        );
        assert_eq!(
            got[5],
            Value::Int(2),
            "DBSIZE sees the transaction's writes"
        );
        assert_eq!(got[6], Value::Int(2));
        assert_eq!(items(got[7].clone()).len(), 2, "TIME");
        assert!(bulk_str(&got[8]).contains("# Keyspace"), "{:?}", got[8]);
        assert_eq!(bulk_str(&got[9]), "OK");
        assert_eq!(bulk_str(&got[10]), "v");
        assert_eq!(
            items(got[11].clone())
                .iter()
                .map(bulk_str)
                .collect::<Vec<_>>(),
            ["maxmemory-policy", "noeviction"]
        );
        assert!(matches!(got[12], Value::Int(id) if id > 0), "{:?}", got[12]);
        assert_eq!(got[13], Value::Int(0));
        assert_eq!(got[14], Value::Int(2));
        assert_eq!(got[15], Value::Int(0));
        // SCAN from cursor 0 walks (at least) the first core; nothing of ours is left.
        let page = items(got[16].clone());
        assert_eq!(page.len(), 2);
        assert_eq!(got[17], Value::Nil);
        // The connection is out of MULTI again.
        assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");

        // The redis crate's atomic pipeline across both cores.
        let (a, b, g0, g1): (String, String, i64, i64) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&k0)
            .arg(10)
            .cmd("SET")
            .arg(&k1)
            .arg(20)
            .cmd("INCRBY")
            .arg(&k0)
            .arg(1)
            .cmd("INCRBY")
            .arg(&k1)
            .arg(2)
            .query(&mut c)
            .unwrap();
        assert_eq!((a.as_str(), b.as_str(), g0, g1), ("OK", "OK", 11, 22));
        let (n, vals): (i64, Vec<String>) = redis::pipe()
            .atomic()
            .cmd("DBSIZE")
            .cmd("MGET")
            .arg(&k0)
            .arg(&k1)
            .query(&mut c)
            .unwrap();
        // DBSIZE counts the default map only (the DM.PUT entry lives in map `m`).
        assert_eq!((n, vals), (2, vec!["11".to_owned(), "22".to_owned()]));
    });
}

#[test]
fn multi_error_rules() {
    both(|node| {
        let mut s = raw(node);
        // Wrong arity and unknown commands flag the transaction.
        exchange(
            &mut s,
            b"MULTI\r\nPING\r\nGET\r\nEXEC\r\n",
            b"+OK\r\n+QUEUED\r\n-ERR wrong number of arguments for 'get' command\r\n-EXECABORT Transaction discarded because of previous errors.\r\n",
        );
        exchange(
            &mut s,
            b"MULTI\r\nNOSUCH x\r\nEXEC\r\n",
            b"+OK\r\n-ERR unknown command 'NOSUCH', with args beginning with: 'x' \r\n-EXECABORT Transaction discarded because of previous errors.\r\n",
        );
        // Commands refused inside MULTI flag it too, and run nothing.
        exchange(
            &mut s,
            b"MULTI\r\nSET {e}a 1\r\nSUBSCRIBE ch\r\nEXEC\r\nEXISTS {e}a\r\n",
            b"+OK\r\n+QUEUED\r\n-ERR Command not allowed inside a transaction\r\n-EXECABORT Transaction discarded because of previous errors.\r\n:0\r\n",
        );
        exchange(
            &mut s,
            b"MULTI\r\nSHUTDOWN\r\nDISCARD\r\n",
            b"+OK\r\n-ERR Command not allowed inside a transaction\r\n+OK\r\n",
        );
        // WATCH and a nested MULTI answer errors without flagging the transaction.
        exchange(
            &mut s,
            b"MULTI\r\nWATCH {e}a\r\nMULTI\r\nINCR {e}a\r\nEXEC\r\n",
            b"+OK\r\n-ERR WATCH inside MULTI is not allowed\r\n-ERR MULTI calls can not be nested\r\n+QUEUED\r\n*1\r\n:1\r\n",
        );
        // A runtime error is one element of the reply; the other commands still run.
        exchange(
            &mut s,
            b"MULTI\r\nSET {e}s abc\r\nINCR {e}s\r\nSET {e}t 1\r\nEXEC\r\n",
            b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n-ERR value is not an integer or out of range\r\n+OK\r\n",
        );
        // RESP3: the EXEC reply is encoded in the connection's protocol.
        let mut s3 = raw(node);
        s3.write_all(b"HELLO 3\r\n").unwrap();
        let mut buf = [0u8; 4096];
        let _ = s3.read(&mut buf).unwrap();
        exchange(
            &mut s3,
            b"MULTI\r\nGET {e}none\r\nHELLO 3\r\nEXEC\r\n",
            b"+OK\r\n+QUEUED\r\n-ERR Command not allowed inside a transaction\r\n-EXECABORT Transaction discarded because of previous errors.\r\n",
        );
        exchange(
            &mut s3,
            b"MULTI\r\nGET {e}none\r\nEXEC\r\n",
            b"+OK\r\n+QUEUED\r\n*1\r\n_\r\n",
        );
    });
    // The queue is bounded by net.multi_commands_max.
    let mut cfg = config(1);
    cfg.net.multi_commands_max = 2;
    let node = Node::start(cfg).unwrap();
    let mut s = raw(&node);
    exchange(
        &mut s,
        b"MULTI\r\nPING\r\nPING\r\nPING\r\nEXEC\r\nPING\r\n",
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n-ERR MULTI queue is full (2 commands, net.multi_commands_max)\r\n-EXECABORT Transaction discarded because of previous errors.\r\n+PONG\r\n",
    );
    node.shutdown();
}

/// Another client never sees half of a transaction's writes to keys of one core: INCR twice
/// inside MULTI, and every read elsewhere (from connections on both cores) sees an even value.
#[test]
fn exec_is_atomic_per_core_against_other_clients() {
    both(|node| {
        let cores = node.cores();
        let keys: Vec<String> = (0..cores).map(|c| key_on(node, c, "atom")).collect();
        let rounds = 300;
        let writer = {
            let mut w = client(node);
            let keys = keys.clone();
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    let mut p = redis::pipe();
                    p.atomic();
                    for k in &keys {
                        p.cmd("INCR").arg(k).ignore().cmd("INCR").arg(k).ignore();
                    }
                    let () = p.query(&mut w).unwrap();
                }
            })
        };
        let mut readers: Vec<redis::Connection> = (0..cores).map(|c| client_on(node, c)).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut reads = 0u64;
        loop {
            let done = writer.is_finished();
            for r in &mut readers {
                for k in &keys {
                    let v: Option<i64> = q(r, &["GET", k]);
                    let v = v.unwrap_or(0);
                    assert_eq!(v % 2, 0, "{k} seen half-way through a transaction: {v}");
                    reads += 1;
                }
            }
            if done {
                break;
            }
            assert!(Instant::now() < deadline, "writer did not finish");
        }
        writer.join().unwrap();
        for k in &keys {
            assert_eq!(q::<i64>(&mut readers[0], &["GET", k]), 2 * rounds);
        }
        assert!(reads > 0);
    });
}

#[test]
fn watch_any_key_on_either_core() {
    both(|node| {
        let cores = node.cores();
        let mut c = client(node);
        let mut other = client(node);
        for core in 0..cores {
            let k = key_on(node, core, "w");
            let there = key_on(node, core + 1, "wt");
            // A write from another connection makes EXEC return nil and run nothing.
            let _: () = q(&mut c, &["SET", &k, "0"]);
            let _: () = q(&mut c, &["WATCH", &k]);
            let _: () = q(&mut other, &["SET", &k, "theirs"]);
            let r = transaction(&mut c, &[&["SET", &k, "mine"], &["SET", &there, "x"]]);
            assert_eq!(r, Value::Nil, "core {core}");
            assert_eq!(q::<String>(&mut c, &["GET", &k]), "theirs");
            assert_eq!(q::<i64>(&mut c, &["EXISTS", &there]), 0, "nothing ran");
            // Deleting or expiring the key counts as a change too.
            let _: () = q(&mut c, &["WATCH", &k]);
            let _: i64 = q(&mut other, &["DEL", &k]);
            assert_eq!(transaction(&mut c, &[&["GET", &k]]), Value::Nil);
            // Untouched: the transaction runs, on both cores, and the watch is gone after.
            let _: () = q(&mut c, &["WATCH", &k]);
            let r = items(transaction(
                &mut c,
                &[
                    &["SET", &k, "mine"],
                    &["SET", &there, "y"],
                    &["INFO", "server"],
                ],
            ));
            assert_eq!(r.len(), 3);
            assert_eq!(q::<String>(&mut c, &["GET", &there]), "y");
            let _: () = q(&mut other, &["SET", &k, "later"]);
            assert_eq!(items(transaction(&mut c, &[&["GET", &k]])).len(), 1);
            // A key watched while absent, then created elsewhere.
            let fresh = key_on(node, core, "wfresh");
            let _: () = q(&mut c, &["WATCH", &fresh]);
            let _: () = q(&mut other, &["SET", &fresh, "1"]);
            assert_eq!(transaction(&mut c, &[&["INCR", &fresh]]), Value::Nil);
            // UNWATCH forgets.
            let _: () = q(&mut c, &["WATCH", &k]);
            let _: () = q(&mut other, &["SET", &k, "again"]);
            let _: () = q(&mut c, &["UNWATCH"]);
            assert_eq!(items(transaction(&mut c, &[&["GET", &k]])).len(), 1);
        }
        // Keys of different slots on one core can be watched together.
        let a = key_on(node, 0, "wa");
        let b = (0..10_000)
            .map(|i| format!("wb{i}"))
            .find(|x| node.handle().owner(x.as_bytes()) == 0 && x != &a)
            .unwrap();
        let _: () = q(&mut c, &["WATCH", &a, &b]);
        let _: () = q(&mut other, &["SET", &b, "1"]);
        assert_eq!(transaction(&mut c, &[&["GET", &a]]), Value::Nil);
        if cores == 2 {
            // Watched keys must share a core; the refused WATCH changes nothing.
            let k0 = key_on(node, 0, "wx");
            let k1 = key_on(node, 1, "wx");
            let _: () = q(&mut c, &["WATCH", &k0]);
            let e = qerr(&mut c, &["WATCH", &k1]);
            assert!(e.contains("WATCH keys must all live on one core"), "{e}");
            let e = qerr(&mut c, &["WATCH", &k0, &k1]);
            assert!(e.contains("one core"), "{e}");
            let _: () = q(&mut other, &["SET", &k1, "1"]);
            assert_eq!(
                items(transaction(&mut c, &[&["GET", &k0]])).len(),
                1,
                "k1 was never watched"
            );
        } else {
            let _: () = q(&mut c, &["WATCH", "x", "y", "z"]);
            let _: () = q(&mut other, &["SET", "z", "1"]);
            assert_eq!(transaction(&mut c, &[&["GET", "x"]]), Value::Nil);
        }
    });
}

/// In cluster mode (here a one-node cluster) EXEC keeps Redis Cluster's rule: every key of the
/// transaction, queued or watched, in one slot.
#[test]
fn cluster_mode_transactions_keep_the_one_slot_rule() {
    let mut cfg = config(2);
    let c = &mut cfg.cluster;
    c.enabled = true;
    c.cluster_port = 21310;
    c.seeds = vec!["127.0.0.1:21310".into()];
    c.secret = "server tests secret".into();
    c.member_count_quorum = 1;
    c.probe_period_ms = 200;
    c.probe_rtt_ms = 100;
    c.seed_retry_ms = 200;
    c.first_plan_delay_ms = 300;
    c.replan_interval_ms = 100;
    let node = Node::start(cfg).unwrap();
    let mut c = client(&node);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info: String = q(&mut c, &["CLUSTER", "INFO"]);
        if info.contains("cluster_state:ok") {
            break;
        }
        assert!(Instant::now() < deadline, "no table: {info}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut s = raw(&node);
    exchange(
        &mut s,
        b"MULTI\r\nSET a 1\r\nSET b 2\r\nEXEC\r\nEXISTS a\r\nEXISTS b\r\n",
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n-CROSSSLOT Keys in request don't hash to the same slot\r\n:0\r\n:0\r\n",
    );
    exchange(
        &mut s,
        b"WATCH a\r\nMULTI\r\nSET b 2\r\nEXEC\r\n",
        b"+OK\r\n+OK\r\n+QUEUED\r\n-CROSSSLOT Keys in request don't hash to the same slot\r\n",
    );
    exchange(
        &mut s,
        b"MULTI\r\nSET {t}a 1\r\nINCR {t}b\r\nPING\r\nEXEC\r\n",
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n:1\r\n+PONG\r\n",
    );
    node.shutdown();
}

#[test]
fn background_ticks_are_counted_and_timed() {
    let mut cfg = config(1);
    cfg.net.background_tick_ms = 10;
    let node = Node::start(cfg).unwrap();
    let mut c = client_on(&node, 0);
    // Keys that expire at once give active expiry work to do.
    for i in 0..200 {
        let _: () = q(&mut c, &["SET", &format!("bg{i}"), "v", "PX", "1"]);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ticks = shard_counter(&mut c, 0, "bg_ticks");
        let expired = shard_counter(&mut c, 0, "expired_active");
        if ticks >= 5 && expired > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ticks {ticks}, expired {expired}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = shard_counter(&mut c, 0, "bg_tick_us_total");
    let max = shard_counter(&mut c, 0, "bg_tick_us_max");
    assert!(max <= total, "max {max} > total {total}");
    drop(c);
    node.shutdown();
}
