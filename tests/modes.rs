//! The same test body against an embedded node (1 and 2 cores) and against a remote node reached
//! through `Client` over loopback: switching modes is a constructor change.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tessera::{
    Client, ClientConfig, DMap, Error, Execute, Node, NodeConfig, PubSub, PutOptions, Subscription,
};

fn exercise<E: Execute>(m: &DMap<E>) {
    exercise_keys(m);
    #[cfg(feature = "serde")]
    exercise_serde(m);
    exercise_whole_map(m);
}

/// Everything that addresses single keys.
fn exercise_keys<E: Execute>(m: &DMap<E>) {
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
}

/// Operations on the whole map: scan (one cursor over every core) and destroy.
fn exercise_whole_map<E: Execute>(m: &DMap<E>) {
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

#[cfg(feature = "serde")]
fn exercise_serde<E: Execute>(m: &DMap<E>) {
    use serde::{Deserialize, Serialize};
    use tessera::{Codec, Json};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Profile {
        name: String,
        age: u32,
        tags: Vec<String>,
        #[serde(default)]
        email: Option<String>,
    }
    let alice = Profile {
        name: "alice".into(),
        age: 31,
        tags: vec!["admin".into(), "ops".into()],
        email: Some("alice@example.invalid".into()),
    };
    assert!(m.put_serde("profile", &alice, PutOptions::new()).unwrap());
    assert_eq!(m.get_serde::<Profile>("profile").unwrap(), Some(alice));
    // Stored as plain JSON, readable by anything.
    assert_eq!(
        m.get("profile").unwrap().as_deref(),
        Some(
            &br#"{"name":"alice","age":31,"tags":["admin","ops"],"email":"alice@example.invalid"}"#
                [..]
        )
    );
    // An entry written before `email` existed still decodes.
    m.put(
        "old",
        r#"{"name":"bob","age":3,"tags":[]}"#,
        PutOptions::new(),
    )
    .unwrap();
    let bob = m.get_serde::<Profile>("old").unwrap().unwrap();
    assert_eq!((bob.name.as_str(), bob.email), ("bob", None));
    // Conditions and TTL work as for bytes.
    assert!(!m.put_serde("old", &1u8, PutOptions::new().nx()).unwrap());
    assert!(m
        .put_serde("n", &[1u64, 2, 3], PutOptions::ttl(Duration::from_secs(60)))
        .unwrap());
    assert_eq!(m.get_serde::<Vec<u64>>("n").unwrap(), Some(vec![1, 2, 3]));
    assert!(m.get_entry("n").unwrap().unwrap().ttl_ms > 0);
    // A value that is not a Profile is a codec error, and stays as it was.
    assert!(matches!(
        m.get_serde::<Profile>("k100"),
        Err(Error::Codec(_))
    ));
    assert_eq!(m.get("k100").unwrap().as_deref(), Some(&b"v100"[..]));
    assert_eq!(m.get_serde::<Profile>("absent").unwrap(), None);

    // Any other format plugs in as a Codec.
    struct Tagged;
    impl Codec for Tagged {
        fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, Error> {
            let mut out = b"v1:".to_vec();
            out.extend(Json::encode(v)?);
            Ok(out)
        }
        fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, Error> {
            match b.strip_prefix(b"v1:") {
                Some(rest) => Json::decode(rest),
                None => Err(Error::Codec("not a v1 value".into())),
            }
        }
    }
    assert!(m
        .put_with::<Tagged, _>("tagged", "hi", PutOptions::new())
        .unwrap());
    assert_eq!(m.get("tagged").unwrap().as_deref(), Some(&b"v1:\"hi\""[..]));
    assert_eq!(
        m.get_with::<Tagged, String>("tagged").unwrap().as_deref(),
        Some("hi")
    );
    assert!(matches!(
        m.get_with::<Tagged, String>("profile"),
        Err(Error::Codec(_))
    ));
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

/// A 3-node cluster of in-process nodes (cluster ports 23900-23902): the remote client routes by
/// `CLUSTER SLOTS` and runs the same body as against one node, pub/sub included.
#[test]
fn remote_client_against_a_three_node_cluster() {
    let base = 23900u16;
    let nodes: Vec<Node> = (0..3u16)
        .map(|i| {
            let mut config = NodeConfig::default();
            config.net.port = 0;
            config.runtime.cores = 1;
            let c = &mut config.cluster;
            c.enabled = true;
            c.cluster_port = base + i;
            c.seeds = vec![format!("127.0.0.1:{base}")];
            c.secret = "modes test secret".into();
            c.member_count_quorum = 3;
            c.probe_period_ms = 200;
            c.probe_rtt_ms = 100;
            c.suspect_to_down_ms = 1000;
            c.seed_retry_ms = 200;
            c.down_announce_ms = 1000;
            c.first_plan_delay_ms = 600;
            c.replan_interval_ms = 100;
            c.epoch_hint_interval_ms = 200;
            Node::start(config).expect("cluster node starts")
        })
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| n.local_addr().expect("listening").to_string())
        .collect();
    // Bounded wait until every node serves a table naming all three nodes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = addrs.iter().all(|a| {
            let Ok(client) = redis::Client::open(format!("redis://{a}/")) else {
                return false;
            };
            let Ok(mut con) = client.get_connection() else {
                return false;
            };
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut con)
                .unwrap_or_default();
            info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
        });
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut config = ClientConfig::new(addrs[0].clone());
    config.nodes = addrs.clone();
    let client = Client::connect(config).unwrap();
    // The whole body: keys, serde, scan (one cursor over every member) and destroy (on every
    // member), then pub/sub (PUBLISH is broadcast to every member).
    exercise(&client.dmap("users"));
    exercise_pubsub(&client);
    // The embedding API publishes cluster-wide too: subscribers on every member receive it and
    // are all counted, as for the client command.
    let subs: Vec<Subscription> = nodes
        .iter()
        .map(|n| n.subscribe(&["cluster-news"]).unwrap())
        .collect();
    assert_eq!(nodes[1].publish("cluster-news", "hi").unwrap(), 3);
    for s in &subs {
        assert_eq!(next(s), pair("cluster-news", b"hi"));
    }
    assert_eq!(
        PubSub::publish(&nodes[2].handle(), "nobody-here", "x").unwrap(),
        0
    );
    drop(subs);
    // Plain keys through the same client land on every node: it really routes by slot.
    for i in 0..300 {
        let args = vec![
            bytes::Bytes::from_static(b"SET"),
            bytes::Bytes::from(format!("plain{i}")),
            bytes::Bytes::from_static(b"v"),
        ];
        client.execute(args).unwrap();
    }
    for a in &addrs {
        let mut con = redis::Client::open(format!("redis://{a}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        let n: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        assert!(n > 0, "node {a} holds no key");
    }
    drop(client);
    for n in nodes {
        n.shutdown();
    }
}
