//! Cluster tests: the Redis Cluster surface of a single node (1 and 2 cores), driven with the
//! `redis` crate's plain and cluster clients.

use std::time::Duration;

use redis::{Commands, Value};
use tessera_net::{Node, NodeConfig};

fn config(cores: usize) -> NodeConfig {
    let mut cfg = NodeConfig::default();
    cfg.net.port = 0;
    cfg.runtime.cores = cores;
    cfg
}

fn client(addr: std::net::SocketAddr) -> redis::Connection {
    let c = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let con = c
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    con
}

fn both(f: impl Fn(&Node)) {
    for cores in [1, 2] {
        let node = Node::start(config(cores)).expect("node starts");
        f(&node);
        node.shutdown();
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        other => panic!("not text: {other:?}"),
    }
}

/// A RESP2 map (flat array of names and values) as pairs.
fn pairs(v: &Value) -> Vec<(String, Value)> {
    let Value::Array(items) = v else {
        panic!("not a map: {v:?}")
    };
    items
        .chunks(2)
        .map(|p| (text(&p[0]), p[1].clone()))
        .collect()
}

fn field(v: &Value, name: &str) -> Value {
    pairs(v)
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no field {name} in {v:?}"))
        .1
}

#[test]
fn cluster_commands_on_a_single_node() {
    both(|node| {
        let addr = node.local_addr().unwrap();
        let mut c = client(addr);
        let id: String = redis::cmd("CLUSTER").arg("MYID").query(&mut c).unwrap();
        assert_eq!(id.len(), 40);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));

        // Redis's own examples of the slot function.
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg("foo")
            .query(&mut c)
            .unwrap();
        assert_eq!(slot, 12182);
        let tagged: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg("{user1000}.following")
            .query(&mut c)
            .unwrap();
        let plain: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg("user1000")
            .query(&mut c)
            .unwrap();
        assert_eq!(tagged, plain);

        // SLOTS: one range, this node, cores merged.
        let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut c).unwrap();
        let Value::Array(rows) = &slots else {
            panic!("{slots:?}")
        };
        assert_eq!(rows.len(), 1, "{slots:?}");
        let Value::Array(row) = &rows[0] else {
            panic!()
        };
        assert_eq!(row[0], Value::Int(0));
        assert_eq!(row[1], Value::Int(16383));
        let Value::Array(primary) = &row[2] else {
            panic!()
        };
        assert_eq!(text(&primary[0]), "127.0.0.1");
        assert_eq!(primary[1], Value::Int(i64::from(addr.port())));
        assert_eq!(text(&primary[2]), id);

        // SHARDS: one shard with the whole range and its node.
        let shards: Value = redis::cmd("CLUSTER").arg("SHARDS").query(&mut c).unwrap();
        let Value::Array(shards) = &shards else {
            panic!()
        };
        assert_eq!(shards.len(), 1);
        assert_eq!(
            field(&shards[0], "slots"),
            Value::Array(vec![Value::Int(0), Value::Int(16383)])
        );
        let Value::Array(nodes) = field(&shards[0], "nodes") else {
            panic!()
        };
        assert_eq!(text(&field(&nodes[0], "id")), id);
        assert_eq!(field(&nodes[0], "port"), Value::Int(i64::from(addr.port())));
        assert_eq!(text(&field(&nodes[0], "role")), "master");

        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c).unwrap();
        let line = nodes.lines().next().unwrap();
        assert!(line.starts_with(&id), "{nodes}");
        assert!(
            line.contains(&format!(" 127.0.0.1:{}@", addr.port())),
            "{nodes}"
        );
        assert!(line.contains(" myself,master - "), "{nodes}");
        assert!(line.ends_with(" connected 0-16383"), "{nodes}");
        assert_eq!(nodes.lines().count(), 1);

        let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap();
        assert!(info.contains("cluster_state:ok\r\n"), "{info}");
        assert!(info.contains("cluster_known_nodes:1\r\n"), "{info}");
        assert!(info.contains("cluster_size:1\r\n"), "{info}");

        // Keys in a slot: {t} pins them to one slot, whatever core owns it.
        let tslot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg("{t}")
            .query(&mut c)
            .unwrap();
        for i in 0..7 {
            let _: () = c.set(format!("{{t}}k{i}"), i).unwrap();
        }
        let _: () = c.set("elsewhere{x}", 1).unwrap();
        let n: i64 = redis::cmd("CLUSTER")
            .arg("COUNTKEYSINSLOT")
            .arg(tslot)
            .query(&mut c)
            .unwrap();
        assert_eq!(n, 7);
        let mut keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(tslot)
            .arg(100)
            .query(&mut c)
            .unwrap();
        keys.sort();
        let want: Vec<String> = (0..7).map(|i| format!("{{t}}k{i}")).collect();
        assert_eq!(keys, want);
        let few: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(tslot)
            .arg(3)
            .query(&mut c)
            .unwrap();
        assert_eq!(few.len(), 3);

        // Bad input: Redis's errors, the connection stays.
        let e = redis::cmd("CLUSTER")
            .arg("COUNTKEYSINSLOT")
            .arg(16384)
            .query::<i64>(&mut c)
            .unwrap_err();
        assert!(e.to_string().contains("Invalid slot"), "{e}");
        let e = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(1)
            .arg(-1)
            .query::<Value>(&mut c)
            .unwrap_err();
        assert!(e.to_string().contains("Invalid number of keys"), "{e}");
        let e = redis::cmd("CLUSTER")
            .arg("BOGUS")
            .query::<Value>(&mut c)
            .unwrap_err();
        assert!(e.to_string().contains("unknown subcommand"), "{e}");
        let e = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .query::<Value>(&mut c)
            .unwrap_err();
        assert!(e.to_string().contains("wrong number of arguments"), "{e}");
        let e = redis::cmd("CLUSTER").query::<Value>(&mut c).unwrap_err();
        assert!(e.to_string().contains("wrong number of arguments"), "{e}");
        let e = redis::cmd("CLUSTER")
            .arg("LEAVE")
            .query::<Value>(&mut c)
            .unwrap_err();
        assert!(e.to_string().contains("cluster support disabled"), "{e}");

        for cmd in ["READONLY", "READWRITE", "ASKING"] {
            let ok: String = redis::cmd(cmd).query(&mut c).unwrap();
            assert_eq!(ok, "OK");
        }

        // Olric-style views.
        let members: Value = redis::cmd("CLUSTER.MEMBERS").query(&mut c).unwrap();
        let Value::Array(members) = &members else {
            panic!()
        };
        assert_eq!(members.len(), 1);
        assert_eq!(text(&field(&members[0], "id")), id);
        assert_eq!(
            text(&field(&members[0], "addr")),
            format!("127.0.0.1:{}", addr.port())
        );
        assert_eq!(field(&members[0], "myself"), Value::Int(1));
        assert_eq!(field(&members[0], "coordinator"), Value::Int(1));
        assert_eq!(field(&members[0], "alive"), Value::Int(1));
        assert_eq!(field(&members[0], "slots"), Value::Int(16384));
        assert_eq!(field(&members[0], "cores"), Value::Int(node.cores() as i64));
        let rt: Value = redis::cmd("CLUSTER.ROUTINGTABLE").query(&mut c).unwrap();
        assert_eq!(field(&rt, "epoch"), Value::Int(1));
        assert_eq!(text(&field(&rt, "coordinator")), id);
        let Value::Array(ranges) = field(&rt, "ranges") else {
            panic!()
        };
        assert_eq!(ranges.len(), node.cores(), "one run per core");
        let mut next = 0;
        for (core, r) in ranges.iter().enumerate() {
            assert_eq!(field(r, "first"), Value::Int(next));
            assert_eq!(field(r, "core"), Value::Int(core as i64));
            assert_eq!(field(r, "migrating_to"), Value::Nil);
            let Value::Int(last) = field(r, "last") else {
                panic!()
            };
            next = last + 1;
        }
        assert_eq!(next, 16384);

        // Outside cluster mode a single node still splits multi-key commands over its cores.
        let _: () = c.set("a", 1).unwrap();
        let _: () = c.set("b", 2).unwrap();
        let got: Vec<i64> = c.mget(&["a", "b"]).unwrap();
        assert_eq!(got, vec![1, 2]);
        let info: String = redis::cmd("INFO").arg("cluster").query(&mut c).unwrap();
        assert!(info.contains("cluster_enabled:0"), "{info}");
    });
}

#[test]
fn redis_cluster_client_against_one_node() {
    both(|node| {
        let addr = node.local_addr().unwrap();
        let client = redis::cluster::ClusterClientBuilder::new(vec![format!("redis://{addr}/")])
            .connection_timeout(Duration::from_secs(5))
            .response_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut con = client.get_connection().unwrap();
        for i in 0..2000 {
            let _: () = con
                .set_ex(format!("key:{i}"), format!("value:{i}"), 600)
                .unwrap();
        }
        for i in 0..2000 {
            let v: String = con.get(format!("key:{i}")).unwrap();
            assert_eq!(v, format!("value:{i}"));
        }
        let ttl: i64 = con.ttl("key:7").unwrap();
        assert!((1..=600).contains(&ttl), "{ttl}");
        // Same-slot multi-key commands go through unchanged.
        let _: () = con.set("{h}a", "x").unwrap();
        let _: () = con.set("{h}b", "y").unwrap();
        let got: Vec<String> = con.mget(&["{h}a", "{h}b"]).unwrap();
        assert_eq!(got, vec!["x".to_owned(), "y".to_owned()]);
        let n: i64 = con.del(&["{h}a", "{h}b"]).unwrap();
        assert_eq!(n, 2);
    });
}
