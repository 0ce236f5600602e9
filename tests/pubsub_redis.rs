//! The remote client's pub/sub against a real redis-server (skipped, with a message, when
//! redis-server is not installed): the same `PubSub` calls work on Redis, including password
//! authentication of the subscription's own connection and a server that goes away.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera::{Client, ClientConfig};

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

fn start_redis(extra: &[&str]) -> Option<RedisServer> {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Ok(child) = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
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

#[test]
fn subscribe_on_redis_with_a_password_and_a_server_that_dies() {
    let Some(mut server) = start_redis(&["--requirepass", "s3cret"]) else {
        return;
    };
    let client = Client::connect(ClientConfig {
        password: Some("s3cret".into()),
        ..ClientConfig::new(format!("127.0.0.1:{}", server.port))
    })
    .unwrap();
    let sub = client.subscribe(&["a", "b"]).unwrap();
    assert_eq!(client.publish("a", "1").unwrap(), 1);
    assert_eq!(client.publish("b", b"\x00\xff").unwrap(), 1);
    let got: Vec<(Vec<u8>, Vec<u8>)> = (0..2)
        .map(|_| {
            let (c, m) = sub.recv_timeout(Duration::from_secs(5)).unwrap();
            (c.to_vec(), m.to_vec())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"\x00\xff".to_vec())
        ]
    );
    // No channels is a client error, as SUBSCRIBE without arguments is on the server.
    assert!(client.subscribe::<&str>(&[]).is_err());

    // The server goes away: the subscription ends (recv fails) instead of hanging.
    let _ = server.child.kill();
    let _ = server.child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sub.recv_timeout(Duration::from_millis(100)) {
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                assert!(Instant::now() < deadline, "the subscription never ended");
            }
            Ok(m) => panic!("unexpected message {m:?}"),
        }
    }
}

#[test]
fn a_missing_password_fails_at_connect() {
    let Some(server) = start_redis(&["--requirepass", "s3cret"]) else {
        return;
    };
    let addr = format!("127.0.0.1:{}", server.port);
    let right = Client::connect(ClientConfig {
        password: Some("s3cret".into()),
        ..ClientConfig::new(addr.clone())
    })
    .unwrap();
    // Without the password the client says so when it connects, not at its first command.
    match Client::connect(ClientConfig::new(addr)) {
        Err(tessera::Error::Reply(text)) => assert!(text.starts_with("NOAUTH"), "{text}"),
        other => panic!("expected NOAUTH, got {other:?}"),
    }
    let sub = right.subscribe(&["x"]).unwrap();
    assert_eq!(right.publish("x", "y").unwrap(), 1);
    assert_eq!(
        &sub.recv_timeout(Duration::from_secs(5)).unwrap().1[..],
        b"y"
    );
}
