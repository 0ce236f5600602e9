//! Unit tests of command semantics through the public seam (`Command::parse` then
//! `Shard::execute`), with replies and error texts as Redis gives them.

use bytes::Bytes;

use crate::{Command, EngineConfig, EvictionPolicy, Reply, Shard};

const T0: u64 = 1_700_000_000_000;

struct Env {
    shard: Shard,
    now: u64,
}

fn env() -> Env {
    Env {
        shard: Shard::new(EngineConfig::default()),
        now: T0,
    }
}

fn args(line: &str) -> Vec<Bytes> {
    line.split(' ')
        .filter(|s| !s.is_empty())
        .map(|s| Bytes::copy_from_slice(s.as_bytes()))
        .collect()
}

impl Env {
    fn run(&mut self, line: &str) -> Reply {
        self.run_args(&args(line))
    }

    fn run_args(&mut self, a: &[Bytes]) -> Reply {
        match Command::parse(a) {
            Ok(c) => self.shard.execute(c, self.now),
            Err(e) => Reply::Error(e),
        }
    }

    fn err(&mut self, line: &str) -> String {
        match self.run(line) {
            Reply::Error(e) => e.to_string(),
            other => panic!("{line}: expected an error, got {other:?}"),
        }
    }

    fn int(&mut self, line: &str) -> i64 {
        match self.run(line) {
            Reply::Int(n) => n,
            other => panic!("{line}: expected an integer, got {other:?}"),
        }
    }

    fn bulk(&mut self, line: &str) -> Option<String> {
        match self.run(line) {
            Reply::Bulk(b) => Some(String::from_utf8(b.to_vec()).unwrap()),
            Reply::Nil => None,
            other => panic!("{line}: expected a bulk, got {other:?}"),
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
    }
}

#[test]
fn set_get_and_conditions() {
    let mut e = env();
    assert_eq!(e.run("SET k v"), Reply::Ok);
    assert_eq!(e.bulk("GET k").as_deref(), Some("v"));
    assert_eq!(e.run("SET k v2 NX"), Reply::Nil);
    assert_eq!(e.run("SET other v XX"), Reply::Nil);
    assert_eq!(e.int("EXISTS other"), 0);
    assert_eq!(e.run("SET k v3 XX"), Reply::Ok);
    assert_eq!(e.bulk("SET k v4 GET").as_deref(), Some("v3"));
    assert_eq!(e.bulk("SET new v GET"), None);
    // NX with GET (Redis 7): returns the old value and does not set.
    assert_eq!(e.bulk("SET k zz NX GET").as_deref(), Some("v4"));
    assert_eq!(e.bulk("GET k").as_deref(), Some("v4"));
    assert_eq!(e.int("SETNX k x"), 0);
    assert_eq!(e.int("SETNX k2 x"), 1);
    assert_eq!(e.bulk("GETSET k2 y").as_deref(), Some("x"));
    assert_eq!(e.bulk("GETDEL k2").as_deref(), Some("y"));
    assert_eq!(e.bulk("GETDEL k2"), None);
    assert_eq!(e.run("MSET a 1 b 2"), Reply::Ok);
    assert_eq!(
        e.run("MGET a nope b"),
        Reply::Array(vec![
            Reply::Bulk(Bytes::from_static(b"1")),
            Reply::Nil,
            Reply::Bulk(Bytes::from_static(b"2"))
        ])
    );
    assert_eq!(e.int("MSETNX a 9 c 3"), 0);
    assert_eq!(e.int("EXISTS c"), 0);
    assert_eq!(e.int("MSETNX c 3 d 4"), 1);
    assert_eq!(e.int("DEL a b nope"), 2);
    assert_eq!(e.int("EXISTS c c d"), 3);
    assert_eq!(e.run("TYPE c"), Reply::simple("string"));
    assert_eq!(e.run("TYPE nope"), Reply::simple("none"));
}

#[test]
fn set_ttl_options() {
    let mut e = env();
    e.run("SET k v EX 10");
    assert_eq!(e.int("TTL k"), 10);
    assert_eq!(e.int("PTTL k"), 10_000);
    e.run("SET k v2 KEEPTTL");
    assert_eq!(e.int("PTTL k"), 10_000);
    e.run("SET k v3");
    assert_eq!(e.int("TTL k"), -1);
    e.run(&format!("SET k v PXAT {}", T0 + 500));
    assert_eq!(e.int("PTTL k"), 500);
    assert_eq!(e.int("EXPIRETIME k"), ((T0 + 500 + 500) / 1000) as i64);
    assert_eq!(e.int("PEXPIRETIME k"), (T0 + 500) as i64);
    e.advance(500);
    // Redis: a key is expired only when now > deadline.
    assert_eq!(e.int("PTTL k"), 0);
    e.advance(1);
    assert_eq!(e.bulk("GET k"), None);
    assert_eq!(e.int("TTL k"), -2);
    e.run("SETEX k 5 v");
    assert_eq!(e.int("TTL k"), 5);
    e.run("PSETEX k 1500 v");
    assert_eq!(e.int("PTTL k"), 1500);
    assert_eq!(e.int("TTL k"), 2); // (1500 + 500) / 1000
    assert_eq!(
        e.err("SET k v EX 0"),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        e.err("SET k v PX 9223372036854775807"),
        "ERR invalid expire time in 'set' command"
    );
    // Failed SET changed nothing.
    assert_eq!(e.int("PTTL k"), 1500);
}

#[test]
fn getex_variants() {
    let mut e = env();
    e.run("SET k v");
    assert_eq!(e.bulk("GETEX k EX 100").as_deref(), Some("v"));
    assert_eq!(e.int("TTL k"), 100);
    assert_eq!(e.bulk("GETEX k").as_deref(), Some("v"));
    assert_eq!(e.int("TTL k"), 100);
    assert_eq!(e.bulk("GETEX k PERSIST").as_deref(), Some("v"));
    assert_eq!(e.int("TTL k"), -1);
    assert_eq!(e.bulk("GETEX k PXAT 1").as_deref(), Some("v"));
    assert_eq!(e.int("EXISTS k"), 0);
    assert_eq!(e.bulk("GETEX nope EX 1"), None);
}

#[test]
fn expire_conditions() {
    let mut e = env();
    assert_eq!(e.int("EXPIRE nope 10"), 0);
    e.run("SET k v");
    assert_eq!(e.int("EXPIRE k 100 XX"), 0);
    assert_eq!(e.int("EXPIRE k 100 GT"), 0);
    assert_eq!(e.int("EXPIRE k 100 LT"), 1);
    assert_eq!(e.int("TTL k"), 100);
    assert_eq!(e.int("EXPIRE k 50 NX"), 0);
    assert_eq!(e.int("EXPIRE k 200 GT"), 1);
    assert_eq!(e.int("EXPIRE k 100 GT"), 0);
    assert_eq!(e.int("EXPIRE k 300 LT"), 0);
    assert_eq!(e.int("EXPIRE k 150 LT XX"), 1);
    assert_eq!(e.int("TTL k"), 150);
    assert_eq!(e.int("PERSIST k"), 1);
    assert_eq!(e.int("PERSIST k"), 0);
    assert_eq!(e.int("EXPIRE k 150 LT XX"), 0);
    assert_eq!(e.int("PEXPIRE k 1500"), 1);
    assert_eq!(e.int("PTTL k"), 1500);
    assert_eq!(e.int(&format!("EXPIREAT k {}", T0 / 1000 + 20)), 1);
    assert_eq!(e.int("TTL k"), 20);
    assert_eq!(e.int(&format!("PEXPIREAT k {}", T0 + 20)), 1);
    assert_eq!(e.int("PTTL k"), 20);
    // A deadline in the past deletes the key and replies 1.
    assert_eq!(e.int("EXPIRE k -1"), 1);
    assert_eq!(e.int("EXISTS k"), 0);
    e.run("SET k v");
    assert_eq!(e.int("EXPIRE k 0"), 1);
    assert_eq!(e.int("EXISTS k"), 0);
    e.run("SET k v");
    assert_eq!(
        e.err("EXPIRE k 9223372036854775807"),
        "ERR invalid expire time in 'expire' command"
    );
    assert_eq!(
        e.err("PEXPIRE k 9223372036854775807"),
        "ERR invalid expire time in 'pexpire' command"
    );
    assert_eq!(
        e.err("EXPIRE k 10 NX GT"),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(e.int("TTL k"), -1);
}

#[test]
fn integers() {
    let mut e = env();
    assert_eq!(e.int("INCR n"), 1);
    assert_eq!(e.int("INCRBY n 10"), 11);
    assert_eq!(e.int("DECR n"), 10);
    assert_eq!(e.int("DECRBY n 20"), -10);
    e.run("SET n 9223372036854775806");
    assert_eq!(e.int("INCR n"), i64::MAX);
    assert_eq!(e.err("INCR n"), "ERR increment or decrement would overflow");
    e.run("SET n -9223372036854775808");
    assert_eq!(e.err("DECR n"), "ERR increment or decrement would overflow");
    assert_eq!(
        e.err("INCRBY n -1"),
        "ERR increment or decrement would overflow"
    );
    e.run("SET s abc");
    assert_eq!(
        e.err("INCR s"),
        "ERR value is not an integer or out of range"
    );
    e.run("SET s 01");
    assert_eq!(
        e.err("INCR s"),
        "ERR value is not an integer or out of range"
    );
    e.run("SET s  1");
    // TTL is kept by INCR.
    e.run("SET t 5 EX 100");
    assert_eq!(e.int("INCR t"), 6);
    assert_eq!(e.int("TTL t"), 100);
}

#[test]
fn floats() {
    let mut e = env();
    e.run("SET f 10.50");
    assert_eq!(e.bulk("INCRBYFLOAT f 0.1").as_deref(), Some("10.6"));
    assert_eq!(e.bulk("INCRBYFLOAT f -5").as_deref(), Some("5.6"));
    e.run("SET f 5.0e3");
    assert_eq!(e.bulk("INCRBYFLOAT f 2.0e2").as_deref(), Some("5200"));
    assert_eq!(e.bulk("GET f").as_deref(), Some("5200"));
    assert_eq!(e.bulk("INCRBYFLOAT g 1.5").as_deref(), Some("1.5"));
    e.run("SET g abc");
    assert_eq!(e.err("INCRBYFLOAT g 1"), "ERR value is not a valid float");
    e.run("SET g 1");
    assert_eq!(
        e.err("INCRBYFLOAT g +inf"),
        "ERR increment would produce NaN or Infinity"
    );
    assert_eq!(e.bulk("GET g").as_deref(), Some("1"));
}

#[test]
fn ranges_and_append() {
    let mut e = env();
    e.run("SET s Hello_World");
    assert_eq!(e.bulk("GETRANGE s 0 4").as_deref(), Some("Hello"));
    assert_eq!(e.bulk("GETRANGE s -5 -1").as_deref(), Some("World"));
    assert_eq!(e.bulk("GETRANGE s -1 -5").as_deref(), Some(""));
    assert_eq!(e.bulk("GETRANGE s 5 3").as_deref(), Some(""));
    assert_eq!(e.bulk("GETRANGE s 0 -100").as_deref(), Some("H"));
    assert_eq!(e.bulk("GETRANGE s -100 2").as_deref(), Some("Hel"));
    assert_eq!(e.bulk("GETRANGE s 3 1000").as_deref(), Some("lo_World"));
    assert_eq!(e.bulk("GETRANGE nope 0 -1").as_deref(), Some(""));
    assert_eq!(
        e.bulk("GETRANGE s -9223372036854775808 9223372036854775807")
            .as_deref(),
        Some("Hello_World")
    );
    assert_eq!(e.int("SETRANGE s 6 Redis"), 11);
    assert_eq!(e.bulk("GET s").as_deref(), Some("Hello_Redis"));
    assert_eq!(e.int("SETRANGE p 3 ab"), 5);
    assert_eq!(e.bulk("GET p").as_deref(), Some("\0\0\0ab"));
    let empty = vec![
        Bytes::from_static(b"SETRANGE"),
        Bytes::from_static(b"s"),
        Bytes::from_static(b"100"),
        Bytes::new(),
    ];
    assert_eq!(e.run_args(&empty), Reply::Int(11));
    assert_eq!(
        e.run_args(&[
            empty[0].clone(),
            Bytes::from_static(b"q"),
            empty[2].clone(),
            Bytes::new()
        ]),
        Reply::Int(0)
    );
    assert_eq!(e.int("EXISTS q"), 0);
    assert_eq!(
        e.err("SETRANGE s 17179869184 x"),
        "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
    );
    assert_eq!(e.err("SETRANGE s -1 x"), "ERR offset is out of range");
    assert_eq!(e.int("APPEND s !"), 12);
    assert_eq!(e.int("APPEND new abc"), 3);
    assert_eq!(e.int("STRLEN s"), 12);
    assert_eq!(e.int("STRLEN nope"), 0);
    e.run("SET t v EX 100");
    e.run("APPEND t w");
    e.run("SETRANGE t 0 x");
    assert_eq!(e.int("TTL t"), 100);
}

#[test]
fn rename_and_keyspace() {
    let mut e = env();
    assert_eq!(e.err("RENAME a b"), "ERR no such key");
    e.run("SET a 1 EX 100");
    assert_eq!(e.run("RENAME a b"), Reply::Ok);
    assert_eq!(e.int("EXISTS a"), 0);
    assert_eq!(e.int("TTL b"), 100);
    e.run("SET c 3");
    assert_eq!(e.int("RENAMENX b c"), 0);
    assert_eq!(e.int("RENAMENX b d"), 1);
    assert_eq!(e.run("RENAME d d"), Reply::Ok);
    assert_eq!(e.int("DBSIZE"), 2);
    assert!(matches!(e.run("RANDOMKEY"), Reply::Bulk(_)));
    assert!(matches!(e.run("MEMORY USAGE c"), Reply::Int(n) if n > 0));
    assert_eq!(e.run("MEMORY USAGE nope"), Reply::Nil);
    let Reply::Array(keys) = e.run("KEYS *") else {
        panic!()
    };
    assert_eq!(keys.len(), 2);
    assert_eq!(e.run("FLUSHDB"), Reply::Ok);
    assert_eq!(e.int("DBSIZE"), 0);
    assert_eq!(e.run("RANDOMKEY"), Reply::Nil);
}

fn scan_all(e: &mut Env, prefix: &str, extra: &str) -> Vec<String> {
    let mut cursor = "0".to_owned();
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let Reply::Array(parts) = e.run(&format!("{prefix} {cursor} {extra}")) else {
            panic!("bad scan reply")
        };
        let Reply::Bulk(c) = &parts[0] else { panic!() };
        let Reply::Array(keys) = &parts[1] else {
            panic!()
        };
        for k in keys {
            let Reply::Bulk(k) = k else { panic!() };
            out.push(String::from_utf8(k.to_vec()).unwrap());
        }
        cursor = String::from_utf8(c.to_vec()).unwrap();
        if cursor == "0" {
            return out;
        }
    }
    panic!("scan did not finish")
}

#[test]
fn scan_returns_everything() {
    let mut e = env();
    for i in 0..500 {
        e.run(&format!("SET key:{i} v"));
    }
    let mut keys = scan_all(&mut e, "SCAN", "COUNT 7");
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 500);
    let matched = scan_all(&mut e, "SCAN", "MATCH key:1? COUNT 50");
    assert_eq!(matched.len(), 10);
    assert!(scan_all(&mut e, "SCAN", "TYPE hash").is_empty());
}

#[test]
fn dmap_commands() {
    let mut e = env();
    assert_eq!(e.run("DM.PUT m k v"), Reply::Ok);
    assert_eq!(e.bulk("DM.GET m k").as_deref(), Some("v"));
    assert_eq!(e.err("DM.GET m nope"), "KEYNOTFOUND key not found");
    assert_eq!(e.err("DM.PUT m k v NX"), "KEYFOUND key found");
    assert_eq!(e.err("DM.PUT m k2 v XX"), "KEYNOTFOUND key not found");
    assert_eq!(e.run("DM.PUT m k v2 XX PX 1000"), Reply::Ok);
    // Maps are separate namespaces.
    assert_eq!(e.bulk("GET k"), None);
    let Reply::Map(entry) = e.run("DM.GETENTRY m k") else {
        panic!()
    };
    assert_eq!(entry[0].1, Reply::Bulk(Bytes::from_static(b"v2")));
    assert_eq!(entry[1].1, Reply::Int((T0 + 1000) as i64));
    assert_eq!(entry[2].1, Reply::Int(T0 as i64));
    assert_eq!(e.run("DM.EXPIRE m k 10"), Reply::Ok);
    assert_eq!(e.err("DM.EXPIRE m nope 10"), "KEYNOTFOUND key not found");
    assert_eq!(e.int("DM.INCR m n 5"), 5);
    assert_eq!(e.int("DM.DECR m n 7"), -2);
    assert_eq!(
        e.err("DM.INCR m k 1"),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(e.bulk("DM.INCRBYFLOAT m f 1.25").as_deref(), Some("1.25"));
    assert_eq!(e.bulk("DM.GETPUT m g 1"), None);
    assert_eq!(e.bulk("DM.GETPUT m g 2").as_deref(), Some("1"));
    assert_eq!(e.int("DM.CAS m g 1 3"), 0);
    assert_eq!(e.int("DM.CAS m g 2 3"), 1);
    assert_eq!(e.bulk("DM.GET m g").as_deref(), Some("3"));
    let cas_absent = vec![
        Bytes::from_static(b"DM.CAS"),
        Bytes::from_static(b"m"),
        Bytes::from_static(b"h"),
        Bytes::new(),
        Bytes::from_static(b"x"),
    ];
    assert_eq!(e.run_args(&cas_absent), Reply::Int(1));
    assert_eq!(e.run_args(&cas_absent), Reply::Int(0));
    assert_eq!(e.int("DM.DEL m g h nope"), 2);
    // Locks.
    let Reply::Simple(token) = e.run("DM.LOCK m l 1 PX 100") else {
        panic!()
    };
    let token = String::from_utf8(token.to_vec()).unwrap();
    assert_eq!(e.err("DM.LOCK m l 1"), "LOCKNOTACQUIRED lock not acquired");
    assert_eq!(e.err("DM.UNLOCK m l wrong"), "NOSUCHLOCK no such lock");
    assert_eq!(e.run(&format!("DM.PLOCKLEASE m l {token} 1000")), Reply::Ok);
    e.advance(500);
    assert_eq!(e.err("DM.LOCK m l 1"), "LOCKNOTACQUIRED lock not acquired");
    assert_eq!(e.run(&format!("DM.UNLOCK m l {token}")), Reply::Ok);
    assert_eq!(
        e.err(&format!("DM.UNLOCK m l {token}")),
        "NOSUCHLOCK no such lock"
    );
    assert!(matches!(e.run("DM.LOCK m l 1 EX 1"), Reply::Simple(_)));
    e.advance(1001);
    assert!(matches!(e.run("DM.LOCK m l 1"), Reply::Simple(_)));
    // Scan, stats, destroy.
    let keys = scan_all(&mut e, "DM.SCAN m", "COUNT 2");
    assert!(keys.contains(&"n".to_owned()));
    let Reply::Map(stats) = e.run("DM.STATS m") else {
        panic!()
    };
    assert_eq!(stats[0].0, Reply::simple("length"));
    assert!(matches!(stats[2].1, Reply::Int(h) if h > 0));
    assert_eq!(e.run("DM.DESTROY m"), Reply::Ok);
    assert_eq!(e.err("DM.GET m n"), "KEYNOTFOUND key not found");
}

#[test]
fn dmap_limits() {
    let mut e = env();
    assert_eq!(e.run("DM.CONFIG SET m max_keys 3"), Reply::Ok);
    for i in 0..10 {
        assert_eq!(e.run(&format!("DM.PUT m k{i} v")), Reply::Ok);
    }
    let Reply::Map(stats) = e.run("DM.STATS m") else {
        panic!()
    };
    assert_eq!(stats[0].1, Reply::Int(3));
    assert_eq!(stats[4].1, Reply::Int(7));
    e.run("DM.CONFIG SET m eviction noeviction");
    assert_eq!(
        e.err("DM.PUT m new v"),
        "OOM command not allowed when used memory > 'maxmemory'."
    );
    // Overwriting an existing key is not a new key.
    assert_eq!(e.run("DM.PUT m k9 v2"), Reply::Ok);
    e.run("DM.CONFIG SET m ttl 1000");
    e.run("DM.CONFIG SET m max_keys 0");
    e.run("DM.PUT m t v");
    e.advance(1001);
    assert_eq!(e.err("DM.GET m t"), "KEYNOTFOUND key not found");
    e.run("DM.CONFIG SET m ttl 0");
    e.run("DM.CONFIG SET m max_idle 5000");
    e.run("DM.PUT m i v");
    e.run("DM.PUT m j v");
    e.advance(4000);
    assert_eq!(e.bulk("DM.GET m i").as_deref(), Some("v"));
    assert_eq!(e.bulk("DM.GET m j").as_deref(), Some("v"));
    e.advance(4000);
    assert_eq!(e.bulk("DM.GET m i").as_deref(), Some("v"));
    assert_eq!(e.bulk("DM.GET m j").as_deref(), Some("v"));
    // Access times are kept in units of 8 s and idleness counts from the end of the unit of
    // the last access: both keys live until exactly 5000 ms after it, and not a ms longer.
    let unit_end = e.now - e.now % crate::arena::ACCESS_UNIT_MS + crate::arena::ACCESS_UNIT_MS - 1;
    e.advance(unit_end + 5000 - e.now);
    assert_eq!(e.bulk("DM.GET m i").as_deref(), Some("v"));
    e.advance(1);
    assert_eq!(e.err("DM.GET m j"), "KEYNOTFOUND key not found");
}

#[test]
fn maxmemory_noeviction_and_lru() {
    let mut e = env();
    e.shard.set_maxmemory(20_000);
    let mut n = 0;
    let oom = loop {
        match e.run(&format!("SET key{n} {}", "x".repeat(100))) {
            Reply::Ok => n += 1,
            Reply::Error(err) => break err.to_string(),
            other => panic!("{other:?}"),
        }
        assert!(n < 10_000);
    };
    assert_eq!(
        oom,
        "OOM command not allowed when used memory > 'maxmemory'."
    );
    let before = e.shard.stats();
    assert!(before.used_memory_bytes <= 20_000, "{before:?} n={n}");
    // A failed write changed nothing.
    assert_eq!(
        e.int("EXISTS key{n}".replace("{n}", &n.to_string()).as_str()),
        0
    );
    // Deleting one key makes garbage, not free memory: the write still fails.
    assert_eq!(e.int("DEL key0"), 1);
    assert!(e.run(&format!("SET again {}", "x".repeat(100))).is_error());
    // Deleting a good share of keys lets compaction return whole tables under pressure.
    for i in 1..n / 2 {
        assert_eq!(e.int(&format!("DEL key{i}")), 1);
    }
    assert_eq!(e.run(&format!("SET again {}", "x".repeat(100))), Reply::Ok);
    assert!(e.shard.stats().used_memory_bytes <= 20_000);
    e.shard.set_eviction_policy(EvictionPolicy::AllkeysLru);
    e.shard.record_evictions(true);
    for i in 0..1000 {
        assert_eq!(
            e.run(&format!("SET more{i} {}", "y".repeat(100))),
            Reply::Ok
        );
        e.advance(1000);
    }
    let s = e.shard.stats();
    assert!(s.used_memory_bytes <= 20_000, "{s:?}");
    assert!(s.evicted_keys > 900);
    assert_eq!(e.shard.take_evicted().len() as u64, s.evicted_keys);
}

fn mset_line(prefix: &str, n: usize, value_len: usize) -> String {
    let value = "v".repeat(value_len);
    let pairs: Vec<String> = (0..n).map(|i| format!("{prefix}{i} {value}")).collect();
    format!("MSET {}", pairs.join(" "))
}

#[test]
fn mset_is_all_or_nothing_under_the_budget() {
    let mut e = env();
    e.shard.set_maxmemory(40_000);
    let mut n = 0;
    while e.run(&format!("SET fill{n} {}", "x".repeat(100))) == Reply::Ok {
        n += 1;
        assert!(n < 10_000);
    }
    let keys = e.int("DBSIZE");
    // Far more than fits: refused whole, nothing written.
    assert!(e.run(&mset_line("big", 200, 100)).is_error());
    assert_eq!(e.int("DBSIZE"), keys);
    assert_eq!(e.int("EXISTS big0"), 0);
    assert!(e.shard.stats().used_memory_bytes <= 40_000);
    // Free most of it (compaction reclaims the garbage under pressure): a batch that fits is
    // written whole.
    for i in 0..n - 3 {
        e.run(&format!("DEL fill{i}"));
    }
    let s = e.shard.stats();
    assert_eq!(e.run(&mset_line("small", 50, 100)), Reply::Ok, "{s:?}");
    for i in 0..50 {
        assert_eq!(e.int(&format!("EXISTS small{i}")), 1, "small{i}");
    }
    assert!(e.shard.stats().used_memory_bytes <= 40_000);

    // With an evicting policy the batch evicts other keys, never its own.
    let mut e = env();
    e.shard.set_maxmemory(40_000);
    e.shard.set_eviction_policy(EvictionPolicy::AllkeysLru);
    for policy in [EvictionPolicy::AllkeysLru, EvictionPolicy::AllkeysSieve] {
        e.shard.set_eviction_policy(policy);
        for round in 0..20 {
            assert_eq!(e.run(&mset_line(&format!("r{round}k"), 60, 100)), Reply::Ok);
            for i in 0..60 {
                assert_eq!(
                    e.int(&format!("EXISTS r{round}k{i}")),
                    1,
                    "{policy:?} r{round}k{i}"
                );
            }
            let s = e.shard.stats();
            assert!(s.used_memory_bytes <= 40_000, "{s:?}");
            e.advance(1000);
        }
        assert!(e.shard.stats().evicted_keys > 0);
    }
    // A batch larger than the whole budget cannot fit even after evicting everything else.
    let before = e.int("DBSIZE");
    assert!(e.run(&mset_line("huge", 1000, 100)).is_error());
    assert_eq!(e.int("EXISTS huge0"), 0);
    assert_eq!(e.int("EXISTS huge999"), 0);
    assert!(e.int("DBSIZE") <= before);
}

#[test]
fn mset_respects_per_map_key_limits_whole() {
    for (policy, evicts) in [
        (EvictionPolicy::NoEviction, false),
        (EvictionPolicy::AllkeysLru, true),
    ] {
        let mut e = env();
        let mut cfg = EngineConfig::default();
        cfg.map_defaults.max_keys = 10;
        cfg.map_defaults.eviction = Some(policy);
        e.shard = Shard::new(cfg);
        for i in 0..8 {
            e.run(&format!("SET old{i} v"));
        }
        // Three new keys (and one existing) where two fit.
        let r = e.run("MSET a 1 b 2 old0 x c 3");
        if evicts {
            assert_eq!(r, Reply::Ok);
            for k in ["a", "b", "c", "old0"] {
                assert_eq!(e.int(&format!("EXISTS {k}")), 1, "{k}");
            }
            assert_eq!(e.bulk("GET old0").as_deref(), Some("x"));
            assert_eq!(e.int("DBSIZE"), 10);
        } else {
            assert!(r.is_error(), "{r:?}");
            assert_eq!(e.int("EXISTS a"), 0);
            assert_eq!(e.bulk("GET old0").as_deref(), Some("v"));
            assert_eq!(e.int("DBSIZE"), 8);
            // A repeated key counts once.
            assert_eq!(e.run("MSET a 1 b 2 a 3 old1 y"), Reply::Ok);
            assert_eq!(e.bulk("GET a").as_deref(), Some("3"));
            assert_eq!(e.int("DBSIZE"), 10);
        }
    }
}

#[test]
fn volatile_policies_only_touch_keys_with_ttl() {
    for policy in [EvictionPolicy::VolatileLru, EvictionPolicy::VolatileTtl] {
        let mut e = env();
        e.shard.set_maxmemory(20_000);
        e.shard.set_eviction_policy(policy);
        for i in 0..50 {
            e.run(&format!("SET p{i} {}", "x".repeat(100)));
        }
        for i in 0..1000 {
            let r = e.run(&format!("SET v{i} {} EX {}", "x".repeat(100), 1000 + i));
            if r.is_error() {
                break;
            }
        }
        for i in 0..50 {
            assert_eq!(e.int(&format!("EXISTS p{i}")), 1, "{policy:?}");
        }
        assert!(e.shard.stats().evicted_keys > 0);
    }
}

#[test]
fn active_expiry_removes_expired_keys() {
    let mut e = env();
    for i in 0..200 {
        e.run(&format!("SET k{i} v PX {}", 100 + i % 2));
    }
    for i in 0..50 {
        e.run(&format!("SET p{i} v"));
    }
    e.advance(1000);
    let mut total = 0;
    for _ in 0..100 {
        let r = e.shard.active_expire(e.now, 50);
        assert!(r.sampled <= 50);
        total += r.expired;
        if r.expired == 0 {
            break;
        }
    }
    assert_eq!(total, 200);
    let s = e.shard.stats();
    assert_eq!(s.keys, 50);
    assert_eq!(s.keys_with_ttl, 0);
    assert_eq!(s.expired_keys, 200);
}

#[test]
fn plain_set_over_an_expired_key_counts_the_expiration() {
    let mut e = env();
    e.run("SET k v PX 100");
    e.run("SET live v EX 100");
    e.advance(1000);
    // SET does its lookup and its write in one index probe; the expired old version still
    // counts as an expiration (Redis's lookupKeyWrite deletes it first).
    assert_eq!(e.run("SET k v2"), Reply::Ok);
    assert_eq!(e.run("SET live v2"), Reply::Ok);
    assert_eq!(e.shard.stats().expired_keys, 1);
    assert_eq!(e.int("TTL k"), -1);
    assert_eq!(e.int("TTL live"), -1);
    assert_eq!(e.bulk("GET k").as_deref(), Some("v2"));
    assert_eq!(e.int("DBSIZE"), 2);
    assert_eq!(e.shard.stats().keys_with_ttl, 0);
    assert_eq!(e.run("SETEX k 10 v3"), Reply::Ok);
    assert_eq!(e.int("TTL k"), 10);
}

#[test]
fn active_expiry_counts_each_key_once() {
    // Fewer keys with a TTL than one sample: the sweep wraps around and must not return (and
    // count) a key twice.
    for (dying, living) in [(3, 0), (3, 2), (1, 0), (0, 4)] {
        let mut e = env();
        e.shard = Shard::new(EngineConfig {
            active_expire_samples: 20,
            ..EngineConfig::default()
        });
        for i in 0..dying {
            e.run(&format!("SET d{i} v PX 10"));
        }
        for i in 0..living {
            e.run(&format!("SET l{i} v EX 1000"));
        }
        e.run("SET plain v");
        e.advance(100);
        let r = e.shard.active_expire(e.now, 1000);
        // Every round samples each key with a TTL once; the expired go in the first round,
        // and a round repeats while more than 25% of its sample expired.
        assert_eq!(
            r.sampled,
            dying + living * r.rounds,
            "{dying} {living}: {r:?}"
        );
        assert_eq!(r.rounds, if dying > 0 && living > 0 { 2 } else { 1 });
        assert_eq!(r.expired, dying, "{dying} {living}: {r:?}");
        assert_eq!(e.shard.stats().expired_keys, dying as u64);
        assert_eq!(e.int("DBSIZE"), living as i64 + 1);
        // A second cycle starts mid-chain and wraps: still each live key once.
        let r = e.shard.active_expire(e.now, 1000);
        assert_eq!(
            (r.sampled, r.expired),
            (living, 0),
            "{dying} {living}: {r:?}"
        );
    }
}

#[test]
fn versions_only_grow() {
    let mut e = env();
    e.run("SET k v");
    let v1 = e.shard.key_version(b"default", b"k", e.now).unwrap();
    e.run("SET k v2");
    let v2 = e.shard.key_version(b"default", b"k", e.now).unwrap();
    assert!(v2 > v1);
    e.run("EXPIRE k 100");
    let v3 = e.shard.key_version(b"default", b"k", e.now).unwrap();
    assert!(v3 > v2);
    e.run("DEL k");
    assert_eq!(e.shard.key_version(b"default", b"k", e.now), None);
    e.run("SET k v");
    assert!(e.shard.key_version(b"default", b"k", e.now).unwrap() > v3);
}

#[test]
fn limits_are_errors() {
    let mut e = env();
    e.shard = Shard::new(EngineConfig {
        key_bytes_max: 4,
        value_bytes_max: 8,
        ..EngineConfig::default()
    });
    assert_eq!(
        e.err("SET toolong v"),
        "ERR key exceeds maximum allowed size"
    );
    assert_eq!(
        e.err("SET k 123456789"),
        "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
    );
    e.run("SET k 12345678");
    assert_eq!(
        e.err("APPEND k 9"),
        "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
    );
    assert_eq!(e.bulk("GET k").as_deref(), Some("12345678"));
}

mod no_panic {
    use proptest::prelude::*;

    use super::*;

    const WORDS: &[&str] = &[
        "SET",
        "GET",
        "GETEX",
        "SETRANGE",
        "GETRANGE",
        "INCRBYFLOAT",
        "EXPIRE",
        "PEXPIREAT",
        "SCAN",
        "KEYS",
        "MSET",
        "DM.PUT",
        "DM.LOCK",
        "DM.SCAN",
        "DM.CONFIG",
        "DM.CAS",
        "DM.LOCKLEASE",
        "MEMORY",
        "RENAME",
        "APPEND",
        "INCRBY",
        "DECRBY",
        "k",
        "m",
        "v",
        "EX",
        "PX",
        "EXAT",
        "PXAT",
        "NX",
        "XX",
        "GT",
        "LT",
        "GET",
        "KEEPTTL",
        "PERSIST",
        "MATCH",
        "COUNT",
        "TYPE",
        "USAGE",
        "SET",
        "max_keys",
        "eviction",
        "lru",
        "0",
        "-1",
        "1",
        "5",
        "9223372036854775807",
        "-9223372036854775808",
        "4294967296",
        "1.5",
        "inf",
        "nan",
        "*",
        "[a-",
        "\\",
        "",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        /// Any argument list parses to a command or an error, and executing never panics.
        #[test]
        fn any_arguments_are_handled(words in proptest::collection::vec(0usize..WORDS.len(), 0..9)) {
            let mut e = env();
            e.shard.set_maxmemory(64 * 1024);
            e.run("SET k 10");
            e.run("DM.PUT m k v");
            let args: Vec<Bytes> = words.iter().map(|&i| Bytes::from_static(WORDS[i].as_bytes())).collect();
            let _ = e.run_args(&args);
            let _ = e.run_args(&args);
        }
    }
}

#[test]
fn lru_keeps_recently_used_keys() {
    for policy in [
        EvictionPolicy::AllkeysLru,
        EvictionPolicy::AllkeysLfu,
        EvictionPolicy::AllkeysSieve,
    ] {
        let mut e = env();
        e.run("DM.CONFIG SET c max_keys 100");
        e.run(&format!("DM.CONFIG SET c eviction {}", policy.name()));
        for i in 0..100 {
            e.run(&format!("DM.PUT c k{i} v"));
        }
        for round in 0..5 {
            e.advance(2000);
            for i in 0..20 {
                assert_eq!(
                    e.bulk(&format!("DM.GET c k{i}")).as_deref(),
                    Some("v"),
                    "{round}"
                );
            }
        }
        for i in 100..150 {
            e.advance(10);
            e.run(&format!("DM.PUT c k{i} v"));
        }
        let kept = (0..20)
            .filter(|i| matches!(e.run(&format!("DM.GET c k{i}")), Reply::Bulk(_)))
            .count();
        assert!(kept >= 15, "{policy:?} kept {kept} of 20 hot keys");
    }
}

#[test]
fn shard_is_send_and_commands_cross_cores() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Shard>();
    assert_send::<Command>();
    assert_send::<Reply>();
}

#[test]
fn config_parses_from_toml() {
    let text = r#"
        maxmemory_bytes = 1048576
        maxmemory_policy = "allkeys-lru"
        key_bytes_max = 1024
        [map_defaults]
        ttl_ms = 5000
        [maps.sessions]
        max_keys = 10
        eviction = "allkeys-sieve"
    "#;
    let c: EngineConfig = toml::from_str(text).unwrap();
    c.validate().unwrap();
    assert_eq!(c.maxmemory_policy, EvictionPolicy::AllkeysLru);
    assert_eq!(c.map_config(b"sessions").max_keys, 10);
    assert_eq!(c.map_config(b"other").ttl_ms, 5000);
    let c: EngineConfig = toml::from_str("maxmemory_policy = \"noeviction\"").unwrap();
    assert_eq!(c.maxmemory_policy, EvictionPolicy::NoEviction);
    assert!(toml::from_str::<EngineConfig>("bogus = 1").is_err());
    // The map default TTL applies to writes without a TTL.
    let mut e = env();
    e.shard = Shard::new(toml::from_str("[maps.default]\nttl_ms = 5000").unwrap());
    e.run("SET k v");
    assert_eq!(e.int("PTTL k"), 5000);
}

#[test]
fn running_out_of_table_ids_is_an_error_not_a_panic() {
    let mut e = env();
    e.shard = Shard::new(EngineConfig {
        table_bytes_min: 256,
        table_bytes_max: 256,
        ..EngineConfig::default()
    });
    // 200-byte keys (values this size would go out of line): one entry per table.
    let pad = "x".repeat(190);
    let mut stored = 0u32;
    let err = loop {
        match e.run(&format!("SET k{stored:08}{pad} v")) {
            Reply::Ok => stored += 1,
            Reply::Error(err) => break err,
            other => panic!("{other:?}"),
        }
        assert!(stored < 100_000);
    };
    // One entry per 256-byte table: 2^16 table ids (8 offset bits would leave 24 for ids, but
    // ids are capped at 16 bits).
    assert_eq!(stored, 1 << 16);
    assert_eq!(err, crate::CommandError::MapFull);
    assert!(err.to_string().starts_with("ERR map is full on this shard"));
    // MSET is refused whole, also with a new table's worth of keys.
    assert_eq!(
        e.err(&format!("MSET a{pad} v b{pad} v")),
        crate::CommandError::MapFull.to_string()
    );
    assert_eq!(e.bulk(&format!("GET k{:08}{pad}", 0)).as_deref(), Some("v"));
    // Deleting frees table ids again.
    assert_eq!(e.int(&format!("DEL k{:08}{pad}", 0)), 1);
    assert_eq!(e.run(&format!("SET k{stored:08}{pad} v")), Reply::Ok);
}

#[test]
fn keys_is_bounded() {
    let mut e = env();
    e.shard = Shard::new(EngineConfig {
        scan_keys_max: 10,
        ..EngineConfig::default()
    });
    for i in 0..20 {
        e.run(&format!("SET k{i} v"));
    }
    assert!(e.err("KEYS *").contains("use SCAN"));
    let Reply::Array(some) = e.run("KEYS k1?") else {
        panic!()
    };
    assert_eq!(some.len(), 10);
}

#[test]
fn map_names_are_limited_like_keys() {
    let mut e = env();
    e.shard = Shard::new(EngineConfig {
        map_name_bytes_max: 8,
        ..EngineConfig::default()
    });
    assert_eq!(
        e.err("DM.PUT averylongmapname k v"),
        "ERR map name exceeds maximum allowed size"
    );
    assert_eq!(
        e.err("DM.CONFIG SET averylongmapname ttl 5"),
        "ERR map name exceeds maximum allowed size"
    );
    assert_eq!(e.run("DM.PUT short k v"), Reply::Ok);
}

#[test]
fn sieve_never_fails_a_write_because_its_victim_is_the_written_key() {
    let mut e = env();
    e.shard.set_maxmemory(40_000);
    e.shard.set_eviction_policy(EvictionPolicy::AllkeysSieve);
    for i in 0..3000u32 {
        // Overwrites of a small hot set mixed with new keys.
        let k = if i % 3 == 0 { i % 7 } else { i };
        let r = e.run(&format!("SET k{k} {}", "v".repeat(40)));
        assert_eq!(r, Reply::Ok, "write {i}");
    }
    assert!(e.shard.stats().used_memory_bytes <= 40_000);
}

#[test]
fn drop_slot_removes_a_large_slot_entirely() {
    let mut e = env();
    for i in 0..20_000 {
        e.run(&format!("SET {{big}}:{i} v"));
    }
    e.run("SET other v");
    let slot = crate::key_slot(b"big");
    assert_eq!(e.shard.slot_key_count(slot), 20_000);
    assert_eq!(e.shard.drop_slot(slot), 20_000);
    assert_eq!(e.shard.slot_key_count(slot), 0);
    assert_eq!(e.int("EXISTS other"), 1);
}

#[test]
fn drop_slot_step_drops_a_large_slot_in_bounded_steps() {
    let mut e = env();
    for i in 0..5_000 {
        e.run(&format!("SET {{big}}:{i} v"));
        if i % 4 == 0 {
            e.run(&format!("DM.PUT m {{big}}:{i} w"));
        }
    }
    e.run("SET other v");
    let slot = crate::key_slot(b"big");
    assert_eq!(e.shard.slot_key_count(slot), 6_250);
    let mut cursor = crate::SlotDropCursor::default();
    let mut steps = 0;
    loop {
        let before = e.shard.slot_key_count(slot);
        let (removed, done) = e.shard.drop_slot_step(slot, &mut cursor, 100);
        assert_eq!(removed as u64, before - e.shard.slot_key_count(slot));
        assert!(removed <= 100, "step {steps} removed {removed}");
        steps += 1;
        if done {
            break;
        }
        assert!(removed > 0, "step {steps} made no progress");
        if steps == 10 {
            // A key added to the slot while it is being dropped goes too.
            e.run("SET {big}:late v");
            e.run("DM.PUT a {big}:late v");
        }
        assert!(steps < 1_000, "never done");
    }
    assert!(steps >= 6_250 / 100, "{steps} steps");
    assert_eq!(e.shard.slot_key_count(slot), 0);
    assert_eq!(e.int("EXISTS other"), 1);
    // An empty slot is done at once.
    assert_eq!(
        e.shard
            .drop_slot_step(slot, &mut crate::SlotDropCursor::default(), 1),
        (0, true)
    );
}

#[test]
fn removals_are_recorded_only_when_asked() {
    let mut e = env();
    e.run("SET a 1 PX 10");
    e.run("SET b 1 PX 10");
    e.advance(20);
    assert!(e.bulk("GET a").is_none());
    assert!(!e.shard.has_removed());
    assert!(e.shard.take_removed().is_empty());
    e.shard.record_removals(true);
    // Lazy expiry (a read), then the active cycle, are recorded; a DEL is not.
    e.run("SET c 1");
    e.run("DM.PUT m d 1 PX 10");
    e.advance(20);
    assert!(e.bulk("GET b").is_none());
    e.shard.active_expire(e.now, 100);
    assert_eq!(e.int("DEL c"), 1);
    assert!(e.shard.has_removed());
    e.shard.record_removals(true); // still on: keeps what was recorded
    let got = e.shard.take_removed();
    assert_eq!(
        got,
        vec![
            (Bytes::from_static(b"default"), Bytes::from_static(b"b")),
            (Bytes::from_static(b"m"), Bytes::from_static(b"d")),
        ]
    );
    assert!(!e.shard.has_removed());
    // Evictions are recorded.
    e.shard.set_maxmemory(20_000);
    e.shard.set_eviction_policy(EvictionPolicy::AllkeysLru);
    for i in 0..500 {
        e.run(&format!("SET e{i} {}", "y".repeat(100)));
    }
    let evicted = e.shard.stats().evicted_keys;
    assert!(evicted > 0);
    let got = e.shard.take_removed();
    assert_eq!(got.len() as u64, evicted);
    assert!(got
        .iter()
        .all(|(m, k)| m.as_ref() == b"default" && k.starts_with(b"e")));
    e.shard.record_removals(false);
    e.run("SET f 1 PX 1");
    e.advance(5);
    assert!(e.bulk("GET f").is_none());
    assert!(!e.shard.has_removed());
}

#[test]
fn extreme_deadlines_do_not_overflow() {
    let mut e = env();
    e.run("SET k v PXAT 9223372036854775807");
    assert_eq!(e.int("PEXPIRETIME k"), i64::MAX);
    assert_eq!(e.int("EXPIRETIME k"), i64::MAX / 1000);
    assert!(e.int("TTL k") > 0);
    e.run("DM.PUT m k v");
    e.run("DM.PEXPIRE m k 9223372036854775807");
    let Reply::Map(entry) = e.run("DM.GETENTRY m k") else {
        panic!()
    };
    assert_eq!(entry[1].1, Reply::Int(i64::MAX));
    e.now = 0;
    e.run("SET z v PX 9223372036854775807");
    assert_eq!(e.int("TTL z"), i64::MAX / 1000);
}

#[test]
fn slot_scan_migrates_every_stable_key_across_maps_and_rehashes() {
    use crate::shard::{SlotCursor, SlotEntry};
    let mut src = env();
    let slot = crate::key_slot(b"tag");
    for i in 0..300 {
        src.run(&format!("SET {{tag}}:{i} v{i}"));
        src.run(&format!("DM.PUT m {{tag}}:{i} w{i} PX 100000"));
    }
    src.run("SET other v");
    assert_eq!(src.shard.slot_key_count(slot), 600);
    let mut seen = std::collections::HashSet::new();
    let mut cursor = SlotCursor::default();
    let mut dst = Shard::new(EngineConfig::default());
    for round in 0..10_000 {
        let mut out: Vec<SlotEntry> = Vec::new();
        let next = src.shard.scan_slot(slot, &cursor, 7, &mut out);
        assert!(out.len() <= 7);
        for e in out {
            seen.insert((e.map.clone(), e.key.clone()));
            assert!(dst
                .put_versioned(&e.map, &e.key, e.value, e.expire_at_ms, e.version, T0)
                .is_ok());
        }
        // New keys during the scan make the slot's tables grow (rehash).
        src.run(&format!("SET {{tag}}:new{round} x"));
        match next {
            Some(c) => cursor = c,
            None => break,
        }
    }
    for i in 0..300 {
        assert!(seen.contains(&(
            Bytes::from_static(b"default"),
            Bytes::from(format!("{{tag}}:{i}"))
        )));
        assert!(seen.contains(&(
            Bytes::from_static(b"m"),
            Bytes::from(format!("{{tag}}:{i}"))
        )));
    }
    // Versions decide: an older write does not replace a newer one.
    let v = dst.key_version(b"m", b"{tag}:1", T0).unwrap();
    assert!(!dst
        .put_versioned(b"m", b"{tag}:1", Bytes::from_static(b"old"), 0, v - 1, T0)
        .unwrap());
    assert!(!dst.delete_versioned(b"m", b"{tag}:1", v));
    assert!(dst.delete_versioned(b"m", b"{tag}:1", v + 1));
    // Local writes after a migrated version get larger versions.
    let mut d = Env {
        shard: dst,
        now: T0,
    };
    d.run("SET {tag}:2 local");
    assert!(d.shard.key_version(b"default", b"{tag}:2", T0).unwrap() > v);
    let before = src.shard.slot_key_count(slot) as usize;
    assert!(before >= 600);
    assert_eq!(src.shard.drop_slot(slot), before);
    assert_eq!(src.shard.slot_key_count(slot), 0);
    assert_eq!(src.int("EXISTS other"), 1);
}

#[test]
fn expire_that_needs_a_new_version_makes_room_or_refuses_with_oom() {
    // Under noeviction at the budget, giving a key its first deadline writes a version 8 bytes
    // larger: it must fail with -OOM and change nothing rather than go over maxmemory.
    let max = 64 * 1024;
    let mut e = env();
    e.shard = Shard::new(
        toml::from_str(&format!(
            "maxmemory_bytes = {max}\nmaxmemory_policy = \"noeviction\""
        ))
        .unwrap(),
    );
    let mut n = 0;
    while n < 100_000 {
        let r = e.run(&format!("SET key:{n} 0123456789abcdef0123456789abcdef"));
        if r.is_error() {
            break;
        }
        n += 1;
    }
    assert!(n > 100 && n < 100_000, "filled {n} keys");
    let (mut ok, mut oom) = (0, 0);
    for i in 0..n {
        match e.run(&format!("PEXPIRE key:{i} 100000")) {
            Reply::Int(1) => {
                ok += 1;
                assert!(e.int(&format!("PTTL key:{i}")) > 0);
            }
            Reply::Error(err) => {
                assert_eq!(err, crate::CommandError::OutOfMemory, "key:{i}");
                oom += 1;
                assert_eq!(
                    e.int(&format!("PTTL key:{i}")),
                    -1,
                    "an -OOM changed the key"
                );
            }
            other => panic!("PEXPIRE key:{i}: {other:?}"),
        }
        assert!(
            e.shard.used_memory() <= max,
            "used {} > {max}",
            e.shard.used_memory()
        );
    }
    assert!(oom > 0, "never at the budget: {ok} PEXPIREs succeeded");
    // A deadline changed in place needs no room: it succeeds even at the budget.
    e.now += 1;
    for i in 0..n {
        if e.int(&format!("PTTL key:{i}")) > 0 {
            assert_eq!(e.int(&format!("PEXPIRE key:{i} 200000")), 1);
        }
    }
}

/// Writes `n` keys, then overwrites all but one in `keep` of them: the older tables are then
/// mostly dead entries.
fn mostly_dead_tables(e: &mut Env, n: usize, keep: usize, value: &str) {
    for i in 0..n {
        e.run(&format!("SET key:{i} {value}"));
    }
    for i in 0..n {
        if i % keep != 0 {
            e.run(&format!("SET key:{i} {value}"));
        }
    }
}

#[test]
fn compaction_step_walks_at_most_its_budget_over_dead_entries() {
    // Tables where 99 entries in 100 are dead: walking them is work (an index lookup per
    // entry) even though almost nothing is moved, so a step's budget must bound the bytes
    // walked, not only the bytes moved (which let one step walk whole tables for ~free).
    let mut e = env();
    let value = "v".repeat(32);
    mostly_dead_tables(&mut e, 60_000, 100, &value);
    let garbage_before = e.shard.stats().garbage_bytes;
    let budget = 4096;
    let entry_max = 128; // one entry of this test, header included, is well under this
    let (mut walked_total, mut moved_total, mut freed, mut steps) = (0, 0, 0, 0);
    loop {
        let r = e.shard.compact_step(budget);
        assert!(
            r.bytes_walked <= budget + entry_max,
            "a step walked {} bytes with a budget of {budget}",
            r.bytes_walked
        );
        assert!(r.bytes_moved <= r.bytes_walked);
        walked_total += r.bytes_walked;
        moved_total += r.bytes_moved;
        freed += r.tables_freed;
        steps += 1;
        if !r.more {
            break;
        }
        assert!(steps < 100_000, "compaction never finished");
    }
    assert!(freed > 0, "no table was freed");
    assert!(moved_total > 0, "no live entry was moved");
    assert!(
        walked_total > 20 * budget,
        "the test did not exercise many steps: {walked_total} bytes walked"
    );
    let garbage_after = e.shard.stats().garbage_bytes;
    assert!(
        garbage_after < garbage_before / 4,
        "garbage {garbage_before} -> {garbage_after}"
    );
    for i in (0..60_000).step_by(997) {
        assert_eq!(e.bulk(&format!("GET key:{i}")), Some(value.clone()));
    }
}

#[test]
fn compaction_stopping_mid_table_stays_within_maxmemory() {
    // A step that stops mid-table has allocated the moved copies' new head table while the
    // old table is still allocated: it must not do so past `maxmemory`. Small budgets (many
    // steps stop mid-table), under a budget the data nearly fills, with overwrites between
    // steps that make garbage (and evict when the budget is reached).
    for (max, budget) in [(256 * 1024, 300), (256 * 1024, 2000), (512 * 1024, 700)] {
        let mut e = env();
        e.shard.set_maxmemory(max);
        e.shard.set_eviction_policy(EvictionPolicy::AllkeysLru);
        let value = "w".repeat(200);
        let keys = max / 400;
        let (mut moved, mut freed, mut mid_table) = (0, 0, 0);
        for round in 0..60 {
            for i in 0..keys {
                if (i + round) % 3 != 0 {
                    e.run(&format!("SET k{i} {value}"));
                }
            }
            for _ in 0..40 {
                let r = e.shard.compact_step(budget);
                let used = e.shard.stats().used_memory_bytes;
                assert!(
                    used <= max,
                    "used memory {used} over maxmemory {max} after {r:?} (budget {budget})"
                );
                moved += r.bytes_moved;
                freed += r.tables_freed;
                if r.bytes_moved > 0 && r.tables_freed == 0 {
                    mid_table += 1;
                }
            }
        }
        // The steps did move entries and stop mid-table (they may then wait, blocked by the
        // budget, for a write's `make_room` to finish the table).
        assert!(
            moved > 0 && mid_table > 0,
            "moved {moved}, freed {freed}, stopped mid-table {mid_table}"
        );
    }
}

#[test]
fn incrbyfloat_and_dm_incrbyfloat_go_beyond_f64_like_redis() {
    // redis-server 7.0.15 replies `SET k 1e308` + `INCRBYFLOAT k 1e308` with all 309 digits
    // of the long double sum (an f64 would overflow); DM.INCRBYFLOAT shares the arithmetic.
    let want = incr_1e308_twice();
    let mut e = env();
    e.run("SET k 1e308");
    assert_eq!(e.bulk("INCRBYFLOAT k 1e308"), Some(want.clone()));
    assert_eq!(e.bulk("GET k"), Some(want.clone()));
    assert_eq!(e.run("DM.PUT m k 1e308"), Reply::Ok);
    assert_eq!(e.bulk("DM.INCRBYFLOAT m k 1e308"), Some(want));
    e.run("SET x 1e4932");
    assert_eq!(
        e.err("INCRBYFLOAT x 1e4932"),
        "ERR increment would produce NaN or Infinity"
    );
}

fn incr_1e308_twice() -> String {
    "199999999999999999993371759311691291321120199694831134415594095989843469737676123744200253843777078640893494450108026446304269499187921167194841628860392837535918200039206381557326219209014213335878306791577877829121087126122536729803237260434173178506889763247582601711514636284849020905456510092687857156096".to_owned()
}
