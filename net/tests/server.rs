//! End-to-end tests: a node started in-process on 127.0.0.1:0 with 1 and with 2 cores, driven
//! with the `redis` crate (RESP2 and RESP3) and with raw bytes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tessera_net::{Node, NodeConfig};

fn start(cores: usize) -> Node {
    let mut cfg = NodeConfig::default();
    cfg.net.port = 0;
    cfg.runtime.cores = cores;
    Node::start(cfg).expect("node starts")
}

fn client(node: &Node) -> redis::Connection {
    let addr = node.local_addr().unwrap();
    let c = redis::Client::open(format!("redis://{addr}/")).unwrap();
    c.get_connection_with_timeout(Duration::from_secs(5))
        .unwrap()
}

#[test]
fn smoke() {
    for cores in [1, 2] {
        let node = start(cores);
        let mut c = client(&node);
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(pong, "PONG");
        let _: () = redis::cmd("SET").arg("a").arg("1").query(&mut c).unwrap();
        let v: String = redis::cmd("GET").arg("a").query(&mut c).unwrap();
        assert_eq!(v, "1");
        drop(c);
        node.shutdown();
    }
}

#[test]
fn raw_ping() {
    let node = start(1);
    eprintln!("started {:?}", node.local_addr());
    let mut s = TcpStream::connect(node.local_addr().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    eprintln!("got {:?}", String::from_utf8_lossy(&buf[..n]));
    drop(s);
    eprintln!("shutting down");
    node.shutdown();
    eprintln!("done");
}
