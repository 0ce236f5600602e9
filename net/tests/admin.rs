//! The admin port end to end: a node started in-process with `[admin] port = 0` (1 and 2
//! cores), scraped over plain TCP, its `/metrics` parsed by `prometheus-parse` (an independent
//! Prometheus text-format parser), health checks, and hostile HTTP input while the data port
//! keeps answering.
// The values compared are integer counts, exact in an f64.
#![allow(clippy::float_cmp)]

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value};
use tessera_net::{Node, NodeConfig, StartError};

fn config(cores: usize) -> NodeConfig {
    let mut cfg = NodeConfig::default();
    cfg.net.port = 0;
    cfg.runtime.cores = cores;
    cfg.admin.port = Some(0);
    cfg
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

/// A response: status, headers (lower-case names), body.
struct Http {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// Sends `raw` and reads until the server closes (it always does after one response).
fn send_raw(addr: SocketAddr, raw: &[u8]) -> Option<Http> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer (and close) before it has read everything we send.
    let _ = s.write_all(raw);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Option<Http> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    Some(Http {
        status,
        headers,
        body: body.to_owned(),
    })
}

fn get(addr: SocketAddr, path: &str) -> Http {
    send_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: tessera\r\n\r\n").as_bytes(),
    )
    .expect("a response")
}

fn scrape(node: &Node) -> Vec<Sample> {
    let r = get(node.admin_addr().unwrap(), "/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(
        r.headers.get("content-length"),
        Some(&r.body.len().to_string())
    );
    let lines = r.body.as_bytes().lines();
    let parsed = Scrape::parse(lines).expect("valid Prometheus text");
    // Every sample is typed by a `# TYPE` line (histogram _sum/_count come out untyped from
    // this parser) and documented by a `# HELP` line.
    for s in &parsed.samples {
        if let Value::Untyped(_) = s.value {
            assert!(
                s.metric.ends_with("_sum") || s.metric.ends_with("_count"),
                "untyped sample {}",
                s.metric
            );
        }
    }
    for name in ["tessera_keys", "tessera_core_keyspace_hits_total"] {
        assert!(parsed.docs.contains_key(name), "no HELP for {name}");
    }
    parsed.samples
}

fn value(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
}

fn counter(samples: &[Sample], metric: &str) -> f64 {
    match samples
        .iter()
        .find(|s| s.metric == metric)
        .map(|s| &s.value)
    {
        Some(Value::Counter(v)) => *v,
        other => panic!("{metric} is not a counter: {other:?}"),
    }
}

fn gauge(samples: &[Sample], metric: &str) -> f64 {
    match samples
        .iter()
        .find(|s| s.metric == metric)
        .map(|s| &s.value)
    {
        Some(Value::Gauge(v)) => *v,
        other => panic!("{metric} is not a gauge: {other:?}"),
    }
}

/// The per-core series of `metric` summed.
fn per_core_sum(samples: &[Sample], metric: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == metric && s.labels.get("core").is_some())
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) => v,
            _ => panic!("{metric}: not a number"),
        })
        .sum()
}

/// (count, cumulative buckets) of the latency histogram of `cmd`.
fn latency(samples: &[Sample], cmd: &str) -> Option<(f64, Vec<(f64, f64)>)> {
    let h = samples.iter().find(|s| {
        s.metric == "tessera_command_latency_seconds" && s.labels.get("cmd") == Some(cmd)
    })?;
    let Value::Histogram(b) = &h.value else {
        panic!("not a histogram: {h:?}");
    };
    let count = value(
        samples,
        "tessera_command_latency_seconds_count",
        &[("cmd", cmd)],
    )?;
    Some((count, b.iter().map(|c| (c.less_than, c.count)).collect()))
}

#[test]
fn metrics_parse_and_counters_move_with_commands() {
    for cores in [1, 2] {
        let node = Node::start(config(cores)).expect("node starts");
        let before = scrape(&node);
        assert_eq!(gauge(&before, "tessera_up"), 1.0);
        assert_eq!(gauge(&before, "tessera_cores"), cores as f64);
        // Outside cluster mode: a one-member table owning every slot.
        assert_eq!(gauge(&before, "tessera_cluster_enabled"), 0.0);
        assert_eq!(gauge(&before, "tessera_cluster_epoch"), 1.0);
        assert_eq!(gauge(&before, "tessera_cluster_members"), 1.0);
        assert_eq!(gauge(&before, "tessera_cluster_owned_slots"), 16384.0);
        assert_eq!(gauge(&before, "tessera_cluster_quorum"), 1.0);
        for c in 0..cores {
            let up = value(&before, "tessera_core_up", &[("core", &c.to_string())]);
            assert_eq!(up, Some(1.0), "core {c} up");
        }
        let mut con = client(&node);
        let n = 200;
        for i in 0..n {
            let _: () = redis::cmd("SET")
                .arg(format!("key:{i}"))
                .arg("v")
                .query(&mut con)
                .unwrap();
        }
        for i in 0..n {
            let _: Option<String> = redis::cmd("GET")
                .arg(format!("key:{i}"))
                .query(&mut con)
                .unwrap();
        }
        let _: Option<String> = redis::cmd("GET").arg("absent").query(&mut con).unwrap();
        let after = scrape(&node);

        let grew = |m: &str| counter(&after, m) - counter(&before, m);
        assert!(grew("tessera_commands_processed_total") >= f64::from(2 * n + 1));
        assert!(grew("tessera_commands_executed_total") >= f64::from(2 * n + 1));
        assert_eq!(grew("tessera_keyspace_hits_total"), f64::from(n));
        assert_eq!(grew("tessera_keyspace_misses_total"), 1.0);
        assert!(grew("tessera_net_input_bytes_total") > 0.0);
        assert_eq!(gauge(&after, "tessera_keys"), f64::from(n));
        assert!(gauge(&after, "tessera_memory_used_bytes") > 0.0);
        assert!(gauge(&after, "tessera_memory_tables_allocated_bytes") > 0.0);
        assert!(gauge(&after, "tessera_connected_clients") >= 1.0);
        // Node totals are the sums of the per-core series.
        for (total, core) in [
            ("tessera_keys", "tessera_core_keys"),
            (
                "tessera_keyspace_hits_total",
                "tessera_core_keyspace_hits_total",
            ),
            (
                "tessera_commands_processed_total",
                "tessera_core_commands_processed_total",
            ),
        ] {
            let Some(t) = samples_value(&after, total) else {
                panic!("{total} missing");
            };
            assert_eq!(per_core_sum(&after, core), t, "{core} adds up to {total}");
        }
        if cores == 2 {
            // Keys spread over both shards, so both cores hold some.
            for c in ["0", "1"] {
                let k = value(&after, "tessera_core_keys", &[("core", c)]).unwrap();
                assert!(k > 0.0, "core {c} holds keys");
            }
        }

        // Latency: one observation per request, cumulative buckets ending in +Inf = count.
        let (set_count, set_buckets) = latency(&after, "set").expect("set latency");
        let before_set = latency(&before, "set").map_or(0.0, |(c, _)| c);
        assert_eq!(set_count - before_set, f64::from(n));
        let (get_count, _) = latency(&after, "get").expect("get latency");
        assert!(get_count >= f64::from(n + 1));
        let last = set_buckets
            .iter()
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap();
        assert!(last.0.is_infinite());
        assert_eq!(last.1, set_count);
        let mut sorted = set_buckets.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(sorted.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative");
        assert_eq!(sorted.len(), 23, "22 bounded buckets and +Inf");
        let sum = value(
            &after,
            "tessera_command_latency_seconds_sum",
            &[("cmd", "set")],
        )
        .unwrap();
        assert!(sum > 0.0 && sum < 60.0, "sum {sum}");
        // A command never run has no series.
        assert!(latency(&after, "flushall").is_none());
        node.shutdown();
    }
}

fn samples_value(samples: &[Sample], metric: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.metric == metric && s.labels.get("core").is_none())
        .and_then(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) => Some(v),
            _ => None,
        })
}

#[test]
fn every_shard_stat_is_exported() {
    let node = Node::start(config(1)).expect("node starts");
    let mut con = client(&node);
    let info: String = redis::cmd("INFO").arg("shards").query(&mut con).unwrap();
    let line = info
        .lines()
        .find(|l| l.starts_with("core0:"))
        .expect("core0 line");
    let fields: Vec<&str> = line["core0:".len()..]
        .split(',')
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(fields.len() > 10, "{line}");
    for f in fields {
        assert!(
            tessera_net::admin::is_exported(f),
            "INFO shards field `{f}` has no metric in admin::DEFS"
        );
    }
    node.shutdown();
}

#[test]
fn health_and_routes() {
    let mut cfg = config(2);
    cfg.net.connections_max = 1;
    let node = Node::start(cfg).expect("node starts");
    let admin = node.admin_addr().unwrap();
    let h = get(admin, "/health");
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(h.body, "live: ok\nready: ok\n");
    assert_eq!(get(admin, "/health/live").body, "live: ok\n");
    assert_eq!(get(admin, "/health/ready").status, 200);
    // The one client slot taken: the node no longer accepts clients, but is alive.
    let con = client(&node);
    let r = get(admin, "/health/ready");
    assert_eq!(r.status, 503);
    assert!(r.body.contains("connections_max"), "{}", r.body);
    assert_eq!(get(admin, "/health/live").status, 200);
    assert_eq!(get(admin, "/health").status, 503);
    drop(con);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(admin, "/health/ready").status != 200 {
        assert!(Instant::now() < deadline, "readiness came back");
        std::thread::sleep(Duration::from_millis(20));
    }

    assert_eq!(get(admin, "/").status, 404);
    assert_eq!(get(admin, "/metricsx").status, 404);
    assert_eq!(get(admin, "/metrics?name[]=x").status, 200);
    let r = send_raw(
        admin,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(
        r.headers.get("allow").map(String::as_str),
        Some("GET, HEAD")
    );
    let r = send_raw(admin, b"HEAD /metrics HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "HEAD has no body");
    assert!(r.headers["content-length"].parse::<usize>().unwrap() > 100);
    node.shutdown();
}

#[test]
fn garbage_gets_errors_and_the_data_port_keeps_answering() {
    let mut cfg = config(2);
    cfg.admin.timeout_ms = 300;
    cfg.admin.connections_max = 4;
    let node = Node::start(cfg).expect("node starts");
    let admin = node.admin_addr().unwrap();
    let mut con = client(&node);
    let ping = |con: &mut redis::Connection| {
        let p: String = redis::cmd("PING").query(con).unwrap();
        assert_eq!(p, "PONG");
    };

    // Not HTTP at all, HTTP/2's preface, a bad request line: 400.
    for raw in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET\r\n\r\n",
    ] {
        let r = send_raw(admin, raw).expect("an answer");
        assert_eq!(r.status, 400, "{raw:?}");
        ping(&mut con);
    }
    // Too large a head, too many headers: 431.
    let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(send_raw(admin, &big).unwrap().status, 431);
    let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
    for i in 0..100 {
        many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(send_raw(admin, &many).unwrap().status, 431);
    ping(&mut con);

    // A request that never completes: 408 after the timeout, not a hang.
    let t = Instant::now();
    let r = send_raw(admin, b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
    assert_eq!(r.status, 408);
    assert!(t.elapsed() < Duration::from_secs(10));

    // Idle connections fill admin.connections_max; the next one is closed without an answer,
    // and the idle ones are timed out, after which scrapes work again.
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(admin).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(50));
    let refused = send_raw(admin, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(
        refused.is_none(),
        "over connections_max: closed without an answer, got {:?}",
        refused.map(|r| (r.status, r.body))
    );
    ping(&mut con);
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        assert_eq!(parse_response(&buf).map(|r| r.status), Some(408));
    }

    // Connect and leave at once: nothing to answer, nothing breaks.
    drop(TcpStream::connect(admin).unwrap());

    // Seeded random bytes: every answer is a 4xx (or a close), never a hang or a crash.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..40 {
        let len = 1 + (round * 37) % 600;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        if let Some(r) = send_raw(admin, &bytes) {
            assert!(
                (400..500).contains(&r.status),
                "round {round}: {}",
                r.status
            );
        }
    }
    ping(&mut con);
    let samples = scrape(&node);
    assert_eq!(gauge(&samples, "tessera_up"), 1.0);
    node.shutdown();
}

#[test]
fn admin_port_is_off_by_default_and_a_taken_port_fails_start() {
    let mut cfg = config(1);
    cfg.admin.port = None;
    let node = Node::start(cfg).expect("node starts");
    assert_eq!(node.admin_addr(), None);
    node.shutdown();

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = config(1);
    cfg.admin.port = Some(taken.local_addr().unwrap().port());
    match Node::start(cfg) {
        Err(StartError::Admin { addr, .. }) => assert_eq!(addr, taken.local_addr().unwrap()),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(n) => {
            n.shutdown();
            panic!("started on a taken admin port");
        }
    }
}

#[test]
fn a_cluster_node_without_a_table_is_alive_but_not_ready() {
    let mut cfg = config(1);
    cfg.cluster.enabled = true;
    cfg.cluster.cluster_port = 0;
    cfg.cluster.secret = "admin tests secret".into();
    // Alone, it never reaches a quorum of 2, so no table is planned.
    cfg.cluster.member_count_quorum = 2;
    let node = Node::start(cfg).expect("node starts");
    let admin = node.admin_addr().unwrap();
    assert_eq!(get(admin, "/health/live").status, 200);
    let r = get(admin, "/health/ready");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.starts_with("ready: cluster: "), "{}", r.body);
    let samples = scrape(&node);
    assert_eq!(gauge(&samples, "tessera_cluster_enabled"), 1.0);
    assert_eq!(gauge(&samples, "tessera_cluster_epoch"), 0.0);
    assert_eq!(gauge(&samples, "tessera_cluster_quorum"), 0.0);
    assert_eq!(gauge(&samples, "tessera_cluster_alive_members"), 1.0);
    node.shutdown();
}
