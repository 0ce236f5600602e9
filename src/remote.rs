//! `Client`: the remote backend of the typed API, for client-server mode.
//!
//! Built on the `redis` crate's synchronous connection (a well-kept RESP client: framing, RESP3,
//! AUTH and timeouts are its job). On top of it this module adds what the typed API needs: a
//! connection pool per node, pipelined batches that come back in order, and slot-aware routing
//! from `CLUSTER SLOTS` with `MOVED`/`ASK` handling when the server is a cluster. A server that
//! is not a cluster (`CLUSTER SLOTS` answers an error) is used as a single node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use redis::{ConnectionLike, Value};
use tessera_engine::{key_slot, Command, Reply, SLOT_COUNT};

use crate::{DMap, Error, Execute, PubSub, Subscription};

/// How often a subscription's reader thread looks up from the socket to see whether its
/// `Subscription` was dropped.
const SUBSCRIBER_POLL: Duration = Duration::from_millis(100);

/// Settings of a remote [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Seed addresses (`host:port`); the first reachable one is asked for the slot map.
    pub nodes: Vec<String>,
    /// Password for `AUTH`, if the server requires one.
    pub password: Option<String>,
    /// Idle connections kept per node. Default 4.
    pub pool_size: usize,
    /// Timeout of a TCP connect. Default 1 s.
    pub connect_timeout: Duration,
    /// Timeout of one read or write on a connection. Default 5 s.
    pub io_timeout: Duration,
    /// How many times a request is re-sent after `MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN` or a
    /// failed connect. Default 5.
    pub retries: u32,
    /// Pause before re-sending after `TRYAGAIN`/`CLUSTERDOWN`/connect failure; doubles each time.
    /// Default 10 ms.
    pub retry_backoff: Duration,
    /// Messages a [`Subscription`] holds before further ones are dropped for it (like the
    /// embedded node's `net.pubsub_pending_max`). Default 4096, at least 1.
    pub subscription_buffer: usize,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            nodes: vec!["127.0.0.1:6379".to_owned()],
            password: None,
            pool_size: 4,
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(5),
            retries: 5,
            retry_backoff: Duration::from_millis(10),
            subscription_buffer: 4096,
        }
    }
}

impl ClientConfig {
    /// A configuration for the server at `addr` (`host:port`) with default settings.
    pub fn new(addr: impl Into<String>) -> ClientConfig {
        ClientConfig {
            nodes: vec![addr.into()],
            ..ClientConfig::default()
        }
    }
}

/// A pooled, slot-aware remote client. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("nodes", &self.inner.config.nodes)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: ClientConfig,
    pools: Mutex<HashMap<String, Vec<redis::Connection>>>,
    /// Owner address of every slot when the server is a cluster; `None` for a single node.
    slots: RwLock<Option<Vec<Arc<str>>>>,
}

/// Why a pipeline could not be sent: before anything was written (safe to re-send anywhere) or
/// after (the commands may have run).
enum SendError {
    Connect(Error),
    Io(Error),
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Error {
        match e {
            SendError::Connect(e) | SendError::Io(e) => e,
        }
    }
}

/// Where a reply told us to go instead.
enum Redirect {
    Moved(u16, String),
    Ask(String),
    Retry,
}

impl Client {
    /// Connects to the first reachable seed and learns the slot map (if it is a cluster).
    pub fn connect(config: ClientConfig) -> Result<Client, Error> {
        if config.nodes.is_empty() {
            return Err(Error::Unavailable("no node address given".into()));
        }
        let client = Client {
            inner: Arc::new(Inner {
                config,
                pools: Mutex::new(HashMap::new()),
                slots: RwLock::new(None),
            }),
        };
        client.refresh_slots()?;
        Ok(client)
    }

    /// A typed handle on map `name`.
    pub fn dmap(&self, name: impl AsRef<[u8]>) -> DMap<Client> {
        DMap::new(self.clone(), name)
    }

    /// Publishes `message` on `channel`; returns how many subscribers received it.
    pub fn publish(
        &self,
        channel: impl AsRef<[u8]>,
        message: impl AsRef<[u8]>,
    ) -> Result<u64, Error> {
        let args = vec![
            Bytes::from_static(b"PUBLISH"),
            Bytes::copy_from_slice(channel.as_ref()),
            Bytes::copy_from_slice(message.as_ref()),
        ];
        match self.execute(args)? {
            Reply::Int(n) => Ok(u64::try_from(n).unwrap_or(0)),
            other => Err(Error::UnexpectedReply {
                command: "PUBLISH",
                reply: format!("{other:?}"),
            }),
        }
    }

    /// Subscribes to `channels` on a connection of its own (to the first seed node: a cluster
    /// delivers every publish on every node), read by a thread that feeds the
    /// [`Subscription`]. Returns once the server confirmed every channel. The same call as
    /// [`Node::subscribe`](crate::Node::subscribe).
    pub fn subscribe<C: AsRef<[u8]>>(&self, channels: &[C]) -> Result<Subscription, Error> {
        if channels.is_empty() {
            return Err(Error::Reply(
                "ERR wrong number of arguments for 'subscribe' command".into(),
            ));
        }
        let cfg = &self.inner.config;
        let addr = cfg.nodes[0].clone();
        let mut conn = self.connection(&addr)?;
        let channels: Vec<Vec<u8>> = channels.iter().map(|c| c.as_ref().to_vec()).collect();
        let (tx, rx) = crossbeam_channel::bounded(cfg.subscription_buffer.max(1));
        let (ack_tx, ack_rx) = crossbeam_channel::bounded::<Result<(), Error>>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("tessera-subscriber".into())
            .spawn(move || {
                let mut ps = conn.as_pubsub();
                for c in &channels {
                    if let Err(e) = ps.subscribe(c) {
                        let _ = ack_tx.send(Err(Error::from_reply_text(&server_error_text(&e))));
                        return;
                    }
                }
                if let Err(e) = ps.set_read_timeout(Some(SUBSCRIBER_POLL)) {
                    let _ = ack_tx.send(Err(unavailable(e)));
                    return;
                }
                let _ = ack_tx.send(Ok(()));
                // Dropping `ps` at the end unsubscribes; the connection then closes.
                while !stop_seen.load(Ordering::Acquire) {
                    match ps.get_message() {
                        Ok(msg) => {
                            let channel = msg.get_channel::<Vec<u8>>().unwrap_or_default();
                            let item = (
                                Bytes::from(channel),
                                Bytes::copy_from_slice(msg.get_payload_bytes()),
                            );
                            // A full queue drops the message for this subscriber, as the
                            // embedded node does; a dropped receiver ends the loop.
                            if let Err(crossbeam_channel::TrySendError::Disconnected(_)) =
                                tx.try_send(item)
                            {
                                break;
                            }
                        }
                        // The read timeout: look at `stop` and wait again. The parser keeps
                        // any partial reply across timeouts.
                        Err(e) if e.is_timeout() => {}
                        Err(_) => break,
                    }
                }
            })
            .map_err(|e| Error::Unavailable(format!("cannot start the subscriber thread: {e}")))?;
        match ack_rx.recv_timeout(cfg.io_timeout + cfg.io_timeout) {
            Ok(Ok(())) => Ok(Subscription::new(rx, Some(stop))),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                stop.store(true, Ordering::Release);
                Err(Error::Unavailable(format!(
                    "{addr}: SUBSCRIBE was not confirmed"
                )))
            }
        }
    }

    /// Re-reads the slot map with `CLUSTER SLOTS` from the first reachable node.
    pub fn refresh_slots(&self) -> Result<(), Error> {
        let mut last_error = None;
        for addr in self.known_addrs() {
            let reply = self.send(&addr, &[cmd_of(&["CLUSTER", "SLOTS"])]);
            match reply {
                Ok(mut replies) => {
                    let map = match replies.pop() {
                        Some(Value::Array(ranges)) => Some(slot_map(&ranges, &addr)),
                        // A password is required and none (or no valid one) was given: say so
                        // now rather than at the first command.
                        Some(Value::ServerError(e))
                            if matches!(e.code(), "NOAUTH" | "WRONGPASS") =>
                        {
                            let e: redis::RedisError = e.into();
                            return Err(Error::Reply(server_error_text(&e)));
                        }
                        // Not a cluster: a single node serves every slot.
                        _ => None,
                    };
                    *self.inner.slots.write().expect("slot map lock") = map;
                    return Ok(());
                }
                Err(e) => last_error = Some(Error::from(e)),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Unavailable("no node reachable".into())))
    }

    /// Runs `commands` as pipelines (one per node) and returns their replies in order. Error
    /// replies are `Err` entries; redirected commands are re-sent one by one.
    pub fn pipeline(&self, commands: &[Vec<Bytes>]) -> Vec<Result<Reply, Error>> {
        let mut groups: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        for (i, args) in commands.iter().enumerate() {
            groups.entry(self.route(args)).or_default().push(i);
        }
        let mut out: Vec<Option<Result<Reply, Error>>> = commands.iter().map(|_| None).collect();
        for (addr, idxs) in groups {
            let cmds: Vec<redis::Cmd> = idxs.iter().map(|&i| cmd_of(&commands[i])).collect();
            match self.send(&addr, &cmds) {
                Ok(values) if values.len() == idxs.len() => {
                    for (&i, value) in idxs.iter().zip(values) {
                        out[i] = Some(match value {
                            Value::ServerError(e) if redirect_of(&e.clone().into()).is_some() => {
                                self.execute(commands[i].clone())
                            }
                            other => to_reply(other),
                        });
                    }
                }
                Ok(_) => {
                    for &i in &idxs {
                        out[i] = Some(Err(Error::Unavailable("short pipeline reply".into())));
                    }
                }
                Err(e) => {
                    let text = Error::from(e).to_string();
                    for &i in &idxs {
                        out[i] = Some(Err(Error::Unavailable(text.clone())));
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Unavailable("no reply".into()))))
            .collect()
    }

    fn known_addrs(&self) -> Vec<Arc<str>> {
        let mut addrs: Vec<Arc<str>> = self
            .inner
            .config
            .nodes
            .iter()
            .map(|a| Arc::from(a.as_str()))
            .collect();
        if let Some(map) = self.inner.slots.read().expect("slot map lock").as_ref() {
            for a in map {
                if !addrs.contains(a) {
                    addrs.push(a.clone());
                }
            }
        }
        addrs
    }

    /// The node a command goes to: its first key's slot owner, else the first seed.
    fn route(&self, args: &[Bytes]) -> Arc<str> {
        let slots = self.inner.slots.read().expect("slot map lock");
        if let (Some(map), Ok(command)) = (slots.as_ref(), Command::parse(args)) {
            if let Some(key) = command.keys().first() {
                return map[usize::from(key_slot(key))].clone();
            }
        }
        Arc::from(self.inner.config.nodes[0].as_str())
    }

    fn connection(&self, addr: &str) -> Result<redis::Connection, Error> {
        if let Some(conn) = self
            .inner
            .pools
            .lock()
            .expect("pool lock")
            .get_mut(addr)
            .and_then(Vec::pop)
        {
            return Ok(conn);
        }
        let cfg = &self.inner.config;
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| Error::Unavailable(format!("bad address {addr}")))?;
        let info = redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Tcp(host, port),
            redis: redis::RedisConnectionInfo {
                password: cfg.password.clone(),
                ..redis::RedisConnectionInfo::default()
            },
        };
        let client = redis::Client::open(info).map_err(unavailable)?;
        let conn = client
            .get_connection_with_timeout(cfg.connect_timeout)
            .map_err(unavailable)?;
        conn.set_read_timeout(Some(cfg.io_timeout))
            .map_err(unavailable)?;
        conn.set_write_timeout(Some(cfg.io_timeout))
            .map_err(unavailable)?;
        Ok(conn)
    }

    /// Sends `cmds` as one pipeline to `addr` and reads every reply (error replies included).
    fn send(&self, addr: &str, cmds: &[redis::Cmd]) -> Result<Vec<Value>, SendError> {
        let mut conn = self.connection(addr).map_err(SendError::Connect)?;
        let mut packed = Vec::new();
        for c in cmds {
            packed.extend_from_slice(&c.get_packed_command());
        }
        let values = conn
            .req_packed_commands(&packed, 0, cmds.len())
            .map_err(|e| SendError::Io(unavailable(e)))?;
        if conn.is_open() {
            let mut pools = self.inner.pools.lock().expect("pool lock");
            let pool = pools.entry(addr.to_owned()).or_default();
            if pool.len() < self.inner.config.pool_size {
                pool.push(conn);
            }
        }
        Ok(values)
    }
}

impl Execute for Client {
    /// Runs one command on the node that owns its key, following redirects. Error replies are
    /// returned as `Err(Error::Reply(text))` (or the typed lock errors).
    fn execute(&self, args: Vec<Bytes>) -> Result<Reply, Error> {
        let cfg = &self.inner.config;
        let mut addr = self.route(&args);
        let mut asking = false;
        let mut backoff = cfg.retry_backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut cmds = Vec::with_capacity(2);
            if asking {
                cmds.push(cmd_of(&["ASKING"]));
            }
            cmds.push(cmd_of(&args));
            let result = self.send(&addr, &cmds);
            asking = false;
            let value = match result {
                Ok(mut values) => values.pop().unwrap_or(Value::Nil),
                Err(SendError::Connect(_)) if attempts <= cfg.retries => {
                    std::thread::sleep(backoff);
                    backoff *= 2;
                    let _ = self.refresh_slots();
                    addr = self.route(&args);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let Value::ServerError(err) = value else {
                return to_reply(value);
            };
            let err: redis::RedisError = err.into();
            match redirect_of(&err) {
                Some(_) if attempts > cfg.retries => {
                    return Err(Error::from_reply_text(&server_error_text(&err)))
                }
                Some(Redirect::Moved(slot, to)) => {
                    let to: Arc<str> = Arc::from(to.as_str());
                    let mut slots = self.inner.slots.write().expect("slot map lock");
                    let map = slots.get_or_insert_with(|| vec![addr.clone(); SLOT_COUNT]);
                    map[usize::from(slot)] = to.clone();
                    addr = to;
                }
                Some(Redirect::Ask(to)) => {
                    addr = Arc::from(to.as_str());
                    asking = true;
                }
                Some(Redirect::Retry) => {
                    std::thread::sleep(backoff);
                    backoff *= 2;
                }
                None => return Err(Error::from_reply_text(&server_error_text(&err))),
            }
        }
    }
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(unavailable)`
fn unavailable(e: redis::RedisError) -> Error {
    Error::Unavailable(e.to_string())
}

fn cmd_of<A: AsRef<[u8]>>(args: &[A]) -> redis::Cmd {
    let mut c = redis::Cmd::new();
    for a in args {
        c.arg(a.as_ref());
    }
    c
}

/// The error reply's full text, `CODE detail`, as the server sent it.
fn server_error_text(err: &redis::RedisError) -> String {
    match (err.code(), err.detail()) {
        (Some(code), Some(d)) => format!("{code} {d}"),
        (Some(code), None) => code.to_owned(),
        _ => err.to_string(),
    }
}

fn redirect_of(err: &redis::RedisError) -> Option<Redirect> {
    let details = err.detail().unwrap_or("");
    let mut parts = details.split_whitespace();
    match err.code()? {
        "MOVED" => {
            let slot = parts.next()?.parse().ok()?;
            Some(Redirect::Moved(slot, parts.next()?.to_owned()))
        }
        "ASK" => {
            let _slot = parts.next()?;
            Some(Redirect::Ask(parts.next()?.to_owned()))
        }
        "TRYAGAIN" | "CLUSTERDOWN" => Some(Redirect::Retry),
        _ => None,
    }
}

/// Builds the per-slot owner table from a `CLUSTER SLOTS` reply; slots it does not cover go to
/// `fallback`.
fn slot_map(ranges: &[Value], fallback: &Arc<str>) -> Vec<Arc<str>> {
    let mut map = vec![fallback.clone(); SLOT_COUNT];
    for range in ranges {
        let Value::Array(items) = range else { continue };
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(primary))) =
            (items.first(), items.get(1), items.get(2))
        else {
            continue;
        };
        let host = match primary.first() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
            Some(Value::SimpleString(h)) => h.clone(),
            _ => continue,
        };
        let Some(Value::Int(port)) = primary.get(1) else {
            continue;
        };
        let owner: Arc<str> = Arc::from(format!("{host}:{port}").as_str());
        let first = usize::try_from(*first).unwrap_or(0);
        let last = usize::try_from(*last).unwrap_or(0).min(SLOT_COUNT - 1);
        for slot in map.iter_mut().take(last + 1).skip(first) {
            *slot = owner.clone();
        }
    }
    map
}

/// Converts a `redis` reply to the protocol-neutral `Reply`; error replies become `Err`.
fn to_reply(value: Value) -> Result<Reply, Error> {
    Ok(match value {
        Value::Nil => Reply::Nil,
        Value::Int(n) => Reply::Int(n),
        Value::BulkString(b) => Reply::Bulk(Bytes::from(b)),
        Value::SimpleString(s) => Reply::Simple(Bytes::from(s)),
        Value::Okay => Reply::Ok,
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
            Reply::Array(items.into_iter().map(to_reply).collect::<Result<_, _>>()?)
        }
        Value::Map(pairs) => Reply::Map(
            pairs
                .into_iter()
                .map(|(k, v)| Ok((to_reply(k)?, to_reply(v)?)))
                .collect::<Result<_, Error>>()?,
        ),
        Value::Attribute { data, .. } => to_reply(*data)?,
        Value::Double(d) => Reply::Double(d),
        Value::Boolean(b) => Reply::Int(i64::from(b)),
        Value::VerbatimString { text, .. } => Reply::Bulk(Bytes::from(text)),
        Value::BigNumber(n) => Reply::Bulk(Bytes::from(n.to_string())),
        Value::ServerError(e) => return Err(Error::from_reply_text(&server_error_text(&e.into()))),
    })
}

impl PubSub for Client {
    fn publish(&self, channel: impl AsRef<[u8]>, message: impl AsRef<[u8]>) -> Result<u64, Error> {
        Client::publish(self, channel, message)
    }

    fn subscribe<C: AsRef<[u8]>>(&self, channels: &[C]) -> Result<Subscription, Error> {
        Client::subscribe(self, channels)
    }
}
