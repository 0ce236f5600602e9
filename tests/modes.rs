//! The same test body against an embedded node (1 and 2 cores) and against a remote node reached
//! through `Client` over loopback: switching modes is a constructor change.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tessera::{
    Client, ClientConfig, DMap, Error, Execute, Node, NodeConfig, PubSub, PutOptions, Subscription,
};

fn exercise<E: Execute>(m: &DMap<E>) {
    // put / get / conditions / delete, with keys spread over every core.
    for i in 0..200 {
        assert!(m
            .put(format!("k{i}"), format!("v{i}"), PutOptions::new())
            .unwrap());
    }
    for i in 0..200 {
        assert_eq!(
            m.get(format!("k{i}")).unwrap().as_deref(),
            Some(format!("v{i}").as_bytes())
        );
    }
    assert!(!m.put("k1", "x", PutOptions::new().nx()).unwrap());
    assert!(!m.put("absent", "x", PutOptions::new().xx()).unwrap());
    assert!(m.put("k1", "x", PutOptions::new().xx()).unwrap());
    assert_eq!(m.get("k1").unwrap().as_deref(), Some(&b"x"[..]));
    let doomed: Vec<String> = (0..50)
        .map(|i| format!("k{i}"))
        .chain(["nope".into()])
        .collect();
    assert_eq!(m.delete(&doomed).unwrap(), 50);
    assert_eq!(m.get("k0").unwrap(), None);

    // TTL and entry metadata (real clock: poll until expired, bounded).
    m.put("ttl", "v", PutOptions::ttl(Duration::from_millis(100)))
        .unwrap();
    let e = m.get_entry("ttl").unwrap().expect("entry");
    assert!(e.ttl_ms > 0 && e.ttl_ms >= e.timestamp_ms);
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.get("ttl").unwrap().is_some() {
        assert!(Instant::now() < deadline, "TTL never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    m.put("e", "v", PutOptions::new()).unwrap();
    assert!(m.expire("e", Duration::from_secs(100)).unwrap());
    assert!(!m.expire("absent", Duration::from_secs(100)).unwrap());

    // Atomic operations on the owner.
    assert_eq!(m.incr("n", 10).unwrap(), 10);
    assert_eq!(m.decr("n", 3).unwrap(), 7);
    assert!((m.incr_by_float("f", 0.5).unwrap() - 0.5).abs() < 1e-9);
    assert!(matches!(m.incr("k100", 1), Err(Error::Reply(_))));
    assert_eq!(m.get_put("gp", "1").unwrap(), None);
    assert_eq!(m.get_put("gp", "2").unwrap().as_deref(), Some(&b"1"[..]));
    assert!(m.compare_and_swap("gp", Some(b"2"), "3", None).unwrap());
    assert!(!m.compare_and_swap("gp", Some(b"2"), "4", None).unwrap());

    // Locks.
    let guard = m
        .lock("res", Duration::ZERO, Duration::from_secs(30))
        .unwrap();
    assert!(matches!(
        m.lock("res", Duration::from_millis(30), Duration::from_secs(30)),
        Err(Error::LockNotAcquired)
    ));
    guard.lease(Duration::from_secs(60)).unwrap();
    guard.unlock().unwrap();
    m.lock("res", Duration::ZERO, Duration::from_secs(30))
        .unwrap()
        .unlock()
        .unwrap();

    // Scan walks every core with one cursor.
    let keys: BTreeSet<Vec<u8>> = m
        .scan(Some("k*"))
        .unwrap()
        .into_iter()
        .map(|k| k.to_vec())
        .collect();
    let expected: BTreeSet<Vec<u8>> = (50..200).map(|i| format!("k{i}").into_bytes()).collect();
    assert_eq!(keys, expected);

    m.destroy().unwrap();
    assert!(m.scan(None).unwrap().is_empty());
    assert_eq!(m.get("k100").unwrap(), None);
}

/// The next message, waiting at most 5 s.
fn next(sub: &Subscription) -> (Vec<u8>, Vec<u8>) {
    let (c, m) = sub
        .recv_timeout(Duration::from_secs(5))
        .expect("a message within 5 s");
    (c.to_vec(), m.to_vec())
}

fn pair(c: &str, m: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (c.as_bytes().to_vec(), m.to_vec())
}

/// Pub/sub through the same calls in every mode.
fn exercise_pubsub<P: PubSub>(p: &P) {
    let sub = p.subscribe(&["news", "sports"]).unwrap();
    assert_eq!(p.publish("news", "hello").unwrap(), 1);
    assert_eq!(p.publish("weather", "rain").unwrap(), 0);
    let binary: &[u8] = b"\x00\r\n*1\r\n$-1\xff";
    assert_eq!(p.publish("sports", binary).unwrap(), 1);
    assert_eq!(next(&sub), pair("news", b"hello"));
    assert_eq!(next(&sub), pair("sports", binary));
    assert!(sub.try_recv().is_err(), "nothing else was delivered");

    // Two subscribers both get a message, in publish order.
    let second = p.subscribe(&["news"]).unwrap();
    for i in 0..20 {
        assert_eq!(p.publish("news", format!("m{i}")).unwrap(), 2);
    }
    for i in 0..20 {
        let m = format!("m{i}");
        assert_eq!(next(&sub), pair("news", m.as_bytes()));
        assert_eq!(next(&second), pair("news", m.as_bytes()));
    }

    // Dropping a subscription ends it (the remote one within its poll interval).
    drop(sub);
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.publish("news", "after-drop").unwrap() != 1 {
        assert!(
            Instant::now() < deadline,
            "the dropped subscription never ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(p.publish("sports", "nobody").unwrap(), 0);
    drop(second);
}

#[test]
fn embedded_one_core() {
    let node = Node::start_embedded(1).unwrap();
    exercise(&node.dmap("users"));
    exercise_pubsub(&node.handle());
    node.shutdown();
}

#[test]
fn embedded_two_cores() {
    let node = Node::start_embedded(2).unwrap();
    assert_eq!(
        node.cores(),
        2.min(std::thread::available_parallelism().unwrap().get())
    );
    exercise(&node.dmap("users"));
    exercise_pubsub(&node);
    node.shutdown();
}

#[test]
fn remote_client_against_a_served_node() {
    let mut config = NodeConfig::default();
    config.net.port = 0;
    config.runtime.cores = 2;
    let node = Node::start(config).unwrap();
    let addr = node.local_addr().expect("listening");
    let client = Client::connect(ClientConfig::new(addr.to_string())).unwrap();
    exercise(&client.dmap("users"));
    exercise_pubsub(&client);
    drop(client);
    node.shutdown();
}

#[test]
fn embedded_pubsub_across_cores() {
    let node = Node::start_embedded(2).unwrap();
    let rx = node.subscribe(&["news"]).unwrap();
    assert_eq!(node.publish("news", "hello").unwrap(), 1);
    let (channel, message) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((&channel[..], &message[..]), (&b"news"[..], &b"hello"[..]));
    drop(rx);
    node.shutdown();
}
