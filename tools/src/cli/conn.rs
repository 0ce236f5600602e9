//! One blocking connection to a Tessera (or Redis) server: connect with a timeout, authenticate,
//! switch to RESP3 on request, send commands and read replies with [`super::resp`].

use super::resp::{encode_command, read_reply, Reply, ReplyLimits, RespError};
use std::io::{BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnOpts {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Password sent with `AUTH` (or inside `HELLO 3`), if any.
    pub password: Option<String>,
    /// User name for ACL authentication; `default` when only a password is given.
    pub user: Option<String>,
    /// Speak RESP3 (`HELLO 3`) instead of RESP2.
    pub resp3: bool,
    /// Longest wait for the TCP connection to be established.
    pub connect_timeout: Duration,
    /// Longest wait for a reply; `None` waits forever (needed for blocking commands and
    /// subscriptions, as in `redis-cli`).
    pub read_timeout: Option<Duration>,
    /// Bounds on what a reply may claim.
    pub limits: ReplyLimits,
}

impl ConnOpts {
    /// `host:port`, as shown in prompts and messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why a connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// No TCP connection could be made to any address the host resolves to.
    #[error("could not connect to {addr}: {cause}")]
    Connect {
        /// `host:port` tried.
        addr: String,
        /// The last failure.
        cause: std::io::Error,
    },
    /// `AUTH` or `HELLO` was refused; the connection is closed.
    #[error("{command} failed at {addr}: {reply}")]
    Handshake {
        /// `host:port` connected to.
        addr: String,
        /// The command refused (`AUTH` or `HELLO`).
        command: &'static str,
        /// The server's error text.
        reply: String,
    },
    /// The connection broke or the server spoke something that is not RESP; it is unusable.
    #[error("{addr}: {cause}")]
    Stream {
        /// `host:port` connected to.
        addr: String,
        /// What went wrong.
        cause: RespError,
    },
}

/// An open connection.
pub struct Conn {
    addr: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    limits: ReplyLimits,
    out: Vec<u8>,
}

impl Conn {
    /// Connects, then authenticates and/or switches protocol as `opts` asks.
    pub fn connect(opts: &ConnOpts) -> Result<Conn, ConnError> {
        let addr = opts.addr();
        let connect_err = |cause| ConnError::Connect {
            addr: addr.clone(),
            cause,
        };
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address found");
        let mut stream = None;
        for sa in (opts.host.as_str(), opts.port)
            .to_socket_addrs()
            .map_err(connect_err)?
        {
            match TcpStream::connect_timeout(&sa, opts.connect_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| connect_err(last))?;
        let setup = |s: &TcpStream| -> std::io::Result<TcpStream> {
            s.set_nodelay(true)?;
            s.set_read_timeout(opts.read_timeout)?;
            s.try_clone()
        };
        let writer = setup(&stream).map_err(connect_err)?;
        let mut conn = Conn {
            addr: addr.clone(),
            reader: BufReader::new(stream),
            writer,
            limits: opts.limits,
            out: Vec::new(),
        };
        let user = opts.user.clone().unwrap_or_else(|| "default".into());
        let handshake = if opts.resp3 {
            let mut args = vec![b"HELLO".to_vec(), b"3".to_vec()];
            if let Some(pass) = &opts.password {
                args.extend([
                    b"AUTH".to_vec(),
                    user.into_bytes(),
                    pass.clone().into_bytes(),
                ]);
            }
            Some(("HELLO", args))
        } else {
            opts.password.as_ref().map(|pass| {
                let mut args = vec![b"AUTH".to_vec()];
                if opts.user.is_some() {
                    args.push(user.into_bytes());
                }
                args.push(pass.clone().into_bytes());
                ("AUTH", args)
            })
        };
        if let Some((command, args)) = handshake {
            if let Reply::Error(e) = conn.call(&args)? {
                return Err(ConnError::Handshake {
                    addr,
                    command,
                    reply: String::from_utf8_lossy(&e).into_owned(),
                });
            }
        }
        Ok(conn)
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one command without waiting for its reply.
    pub fn send(&mut self, args: &[Vec<u8>]) -> Result<(), ConnError> {
        self.out.clear();
        encode_command(args, &mut self.out);
        self.writer
            .write_all(&self.out)
            .map_err(|e| self.stream_err(RespError::Io(e)))
    }

    /// Reads the next reply, whatever it is (a push message included).
    pub fn read(&mut self) -> Result<Reply, ConnError> {
        read_reply(&mut self.reader, &self.limits).map_err(|e| self.stream_err(e))
    }

    /// Sends one command and returns its reply. A RESP3 push message that arrives first is
    /// passed to `on_push`, unless `push_is_reply` (for the subscribe family, whose replies are
    /// pushes in RESP3), when the first message of any kind is the reply.
    pub fn call_with_push(
        &mut self,
        args: &[Vec<u8>],
        push_is_reply: bool,
        on_push: &mut dyn FnMut(&Reply),
    ) -> Result<Reply, ConnError> {
        self.send(args)?;
        loop {
            let reply = self.read()?;
            if matches!(reply, Reply::Push(_)) && !push_is_reply {
                on_push(&reply);
            } else {
                return Ok(reply);
            }
        }
    }

    /// Sends one command and returns its reply, dropping push messages.
    pub fn call(&mut self, args: &[Vec<u8>]) -> Result<Reply, ConnError> {
        self.call_with_push(args, false, &mut |_| {})
    }

    fn stream_err(&self, cause: RespError) -> ConnError {
        ConnError::Stream {
            addr: self.addr.clone(),
            cause,
        }
    }
}

/// Builds an argument list from string slices (tests and internal commands).
pub fn args(parts: &[&str]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.as_bytes().to_vec()).collect()
}
