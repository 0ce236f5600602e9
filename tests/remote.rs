//! The remote client against a real redis-server started by the test (skipped, with a message,
//! when redis-server is not installed; `tools/test.sh` installs it).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera::{Client, ClientConfig, Error, Execute, Reply};

struct RedisServer {
    child: Child,
    port: u16,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_redis(extra: &[&str]) -> Option<RedisServer> {
    let port = free_port();
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
    ])
    .args(["--appendonly", "no"])
    .args(extra)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let Ok(child) = cmd.spawn() else {
        eprintln!("redis-server is not installed: skipping");
        return None;
    };
    let server = RedisServer { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(server)
}

fn args(parts: &[&str]) -> Vec<Bytes> {
    parts
        .iter()
        .map(|p| Bytes::copy_from_slice(p.as_bytes()))
        .collect()
}

#[test]
fn single_node_commands_and_errors() {
    let Some(server) = start_redis(&[]) else {
        return;
    };
    let client = Client::connect(ClientConfig::new(format!("127.0.0.1:{}", server.port))).unwrap();
    assert_eq!(client.execute(args(&["SET", "k", "v"])).unwrap(), Reply::Ok);
    assert_eq!(
        client.execute(args(&["GET", "k"])).unwrap(),
        Reply::Bulk(Bytes::from_static(b"v"))
    );
    assert_eq!(
        client.execute(args(&["GET", "missing"])).unwrap(),
        Reply::Nil
    );
    let err = client.execute(args(&["INCR", "k"])).unwrap_err();
    assert!(
        matches!(&err, Error::Reply(t) if t == "ERR value is not an integer or out of range"),
        "{err:?}"
    );
    assert_eq!(client.publish("ch", "hello").unwrap(), 0);
}

#[test]
fn pipelines_keep_order_and_per_command_errors() {
    let Some(server) = start_redis(&[]) else {
        return;
    };
    let client = Client::connect(ClientConfig::new(format!("127.0.0.1:{}", server.port))).unwrap();
    let mut cmds = Vec::new();
    for i in 0..500 {
        cmds.push(args(&["SET", &format!("key:{i}"), &i.to_string()]));
        cmds.push(args(&["INCR", &format!("key:{i}")]));
    }
    cmds.push(args(&["INCRBY", "key:0", "notanumber"]));
    let replies = client.pipeline(&cmds);
    assert_eq!(replies.len(), 1001);
    for i in 0..500 {
        assert_eq!(replies[2 * i].as_ref().unwrap(), &Reply::Ok);
        assert_eq!(
            replies[2 * i + 1].as_ref().unwrap(),
            &Reply::Int(i as i64 + 1)
        );
    }
    assert!(replies[1000].is_err());
}

#[test]
fn auth_and_unreachable_servers() {
    let Some(server) = start_redis(&["--requirepass", "s3cret"]) else {
        return;
    };
    let addr = format!("127.0.0.1:{}", server.port);
    let wrong = Client::connect(ClientConfig {
        password: Some("wrong".into()),
        ..ClientConfig::new(addr.clone())
    });
    assert!(wrong.is_err());
    let client = Client::connect(ClientConfig {
        password: Some("s3cret".into()),
        ..ClientConfig::new(addr)
    })
    .unwrap();
    assert_eq!(
        client.execute(args(&["PING"])).unwrap(),
        Reply::simple("PONG")
    );
    let nobody = Client::connect(ClientConfig {
        connect_timeout: Duration::from_millis(200),
        ..ClientConfig::new(format!("127.0.0.1:{}", free_port()))
    });
    assert!(matches!(nobody, Err(Error::Unavailable(_))));
}
