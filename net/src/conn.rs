//! One client connection: reading, parsing, dispatching, writing, and the connection- and
//! server-level commands (PING, HELLO, AUTH, CLIENT, INFO, CONFIG, COMMAND, pub/sub,
//! MULTI/EXEC/WATCH, SLOWLOG, TIME, SHUTDOWN ...).
//!
//! Each read is parsed into at most `pipeline_depth_max` requests which form one [`Batch`]:
//! data commands are routed (inline or to their owner core), connection commands act as
//! barriers (the batch so far is finished and written in order first), and all replies go out
//! in request order. A protocol error gets its error reply and closes the connection; every
//! other error is a reply and the connection stays.

use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::LocalReceiver;
use tessera_engine::{Command, CommandError, Reply, DEFAULT_MAP};

use crate::commands::{self, Route, Spec};
use crate::core::{ClientEntry, Core, Op, Watched};
use crate::dispatch::{self, raw_error, Batch, Out, Part};
use crate::info;
use crate::pubsub::{self, PushMsg, Subscriber};
use crate::resp::{self, encode, encode_push, Parser, Protocol};
use crate::runtime::{self, signal::Signal, TcpStream};

/// State of one connection (also used, without a socket, for application-thread requests).
pub struct Conn {
    core: Rc<Core>,
    pub entry: Rc<ClientEntry>,
    proto: Protocol,
    authed: bool,
    multi: Option<Vec<Queued>>,
    multi_dirty: bool,
    watched: Vec<Watched>,
    subs: HashSet<Bytes>,
    psubs: HashSet<Bytes>,
    sub_queue: Option<(Rc<Subscriber>, LocalReceiver<PushMsg>)>,
    closing: bool,
    /// Times each read's requests for the admin port's latency histograms.
    latency: crate::admin::BatchTimer,
}

/// A command queued between MULTI and EXEC, run at EXEC.
enum Queued {
    /// A data command, parsed (and so checked) when queued.
    Data(Command),
    /// SCAN / DM.SCAN, whose node-wide cursor (argument `usize`) is resolved at EXEC.
    Scan(Vec<Bytes>, usize),
    /// A connection or server command.
    Conn(&'static Spec, Vec<Bytes>),
}

/// Commands Redis refuses inside MULTI (`no-multi`), plus HELLO, which would change the
/// protocol of the EXEC reply it is part of.
fn not_in_multi(name: &str) -> bool {
    matches!(
        name,
        "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" | "shutdown" | "hello"
    )
}

/// Connection and server commands that consult other cores (they await): inside EXEC they
/// split the transaction, since a core cannot be held across an await.
fn awaits_other_cores(name: &str) -> bool {
    matches!(name, "client" | "info" | "config" | "slowlog" | "memory")
}

fn ok() -> Reply {
    Reply::Ok
}

fn err(text: &str) -> Reply {
    Reply::Error(CommandError::Other(text.to_owned()))
}

fn bulk(s: impl Into<Bytes>) -> Reply {
    Reply::Bulk(s.into())
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

/// Compares two secrets in time independent of where they differ.
fn ct_eq(given: &[u8], secret: &[u8]) -> bool {
    let len = given.len().max(secret.len());
    let mut diff = u8::from(given.len() != secret.len());
    for i in 0..len {
        let lhs = given.get(i).copied().unwrap_or(0);
        let rhs = secret.get(i).copied().unwrap_or(0);
        diff |= lhs ^ rhs;
    }
    diff == 0
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NOAUTH: &str = "NOAUTH Authentication required.";

impl Conn {
    pub fn new(core: Rc<Core>, entry: Rc<ClientEntry>) -> Conn {
        let authed = core.shared.config.net.requirepass.is_empty();
        Conn {
            core,
            entry,
            proto: Protocol::Resp2,
            authed,
            multi: None,
            multi_dirty: false,
            watched: Vec::new(),
            subs: HashSet::new(),
            psubs: HashSet::new(),
            sub_queue: None,
            closing: false,
            latency: crate::admin::BatchTimer::default(),
        }
    }

    fn sub_count(&self) -> usize {
        self.subs.len() + self.psubs.len()
    }

    /// Handles one request, appending its reply slot(s) to `batch`; connection commands first
    /// finish the batch into `out`.
    pub async fn handle(&mut self, args: Vec<Bytes>, batch: &mut Batch, out: &mut BytesMut) {
        let Some(name) = args.first() else {
            return;
        };
        let core = Rc::clone(&self.core);
        let started = Instant::now();
        let Some(spec) = commands::lookup(name) else {
            if self.multi.is_some() {
                self.multi_dirty = true;
            }
            batch.reply(Reply::Error(unknown(&args)));
            return;
        };
        *self.entry.last_cmd.borrow_mut() = spec.name;
        core.stats.commands.set(core.stats.commands.get() + 1);
        self.latency.note(spec);
        if !spec.arity_ok(args.len()) {
            if self.multi.is_some() {
                self.multi_dirty = true;
            }
            batch.reply(Reply::Error(CommandError::WrongArity(spec.name.to_owned())));
            return;
        }
        if !self.authed && !spec.flags.contains(&"noauth") {
            batch.push(raw_error(NOAUTH));
            return;
        }
        if self.proto == Protocol::Resp2
            && self.sub_count() > 0
            && !matches!(
                spec.name,
                "subscribe"
                    | "psubscribe"
                    | "unsubscribe"
                    | "punsubscribe"
                    | "ping"
                    | "quit"
                    | "reset"
            )
        {
            batch.reply(err(&format!(
                "Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                spec.name
            )));
            return;
        }
        if self.multi.is_some()
            && !matches!(
                spec.name,
                "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
            )
        {
            self.queue(spec, &args, batch);
            return;
        }
        match spec.route {
            Route::Data => self.data(spec, &args, batch).await,
            Route::Conn if matches!(spec.name, "ping" | "echo" | "time" | "select" | "command") => {
                // Stateless replies: no need to wait for what precedes them.
                self.conn_command(spec, &args, batch, out).await;
            }
            Route::Conn => {
                // Barrier: everything before this request is answered first, in order.
                batch.finish(&core, self.proto, out).await;
                self.conn_command(spec, &args, batch, out).await;
                batch.finish(&core, self.proto, out).await;
            }
        }
        let micros = started.elapsed().as_micros() as u64;
        if micros >= core.shared.config.net.slowlog_slower_than_us {
            core.record_slow(
                micros,
                &args,
                &self.entry.addr,
                &String::from_utf8_lossy(&self.entry.name.borrow()),
            );
        }
    }

    async fn data(&mut self, spec: &Spec, args: &[Bytes], batch: &mut Batch) {
        let core = Rc::clone(&self.core);
        match spec.name {
            "dm.scan" if crate::cluster::wide::active(&core) => {
                self.barrier(batch).await;
                let page = crate::cluster::wide::scan(&core, args, 2).await;
                return batch.push(Out::Raw(page));
            }
            "scan" | "dm.scan" => {
                let at = if spec.name == "scan" { 1 } else { 2 };
                let out = dispatch::route_scan(&core, batch, args, at);
                return batch.push(out);
            }
            _ => {}
        }
        let cmd = match Command::parse(args) {
            Ok(c) => c,
            Err(e) => return batch.reply(Reply::Error(e)),
        };
        if let Some(out) = crate::cluster::proxy::forward(&core, &cmd, args, self.proto) {
            return batch.push(out);
        }
        if matches!(cmd, Command::Flush { .. } | Command::DmDestroy { .. })
            && crate::cluster::wide::active(&core)
        {
            // Cluster-wide: after everything before it, here and then on every member.
            self.barrier(batch).await;
            let local = dispatch::run_for_thread(&core, Ok(cmd)).await;
            let r = crate::cluster::wide::all_ok(&core, args, local).await;
            return batch.push(Out::Raw(r));
        }
        if cmd.lock_wait_ms().is_some() {
            if let Err(out) = crate::cluster::admit(&core, &cmd) {
                return batch.push(out);
            }
            // Waiting for a lock must not hold back replies that precede it.
            self.barrier(batch).await;
            let r = dispatch::lock(&core, cmd).await;
            batch.reply(r);
            return;
        }
        let out = dispatch::route(&core, batch, cmd);
        batch.push(out);
    }

    /// Runs (and answers) everything queued before the next request, so that a request awaited
    /// here comes after it and does not hold its replies back.
    async fn barrier(&self, batch: &mut Batch) {
        let mut early = BytesMut::new();
        batch.finish(&self.core, self.proto, &mut early).await;
        if !early.is_empty() {
            batch.push(Out::Raw(early.freeze()));
        }
    }

    /// Queues one command after MULTI (answering `+QUEUED`), or answers its error and flags
    /// the transaction so that EXEC discards it, as Redis does.
    fn queue(&mut self, spec: &'static Spec, args: &[Bytes], batch: &mut Batch) {
        let max = self.core.shared.config.net.multi_commands_max;
        let queued = self.multi.as_ref().map_or(0, Vec::len);
        let item = if not_in_multi(spec.name) {
            Err(err("Command not allowed inside a transaction"))
        } else if queued >= max {
            Err(err(&format!(
                "MULTI queue is full ({max} commands, net.multi_commands_max)"
            )))
        } else {
            match (spec.route, spec.name) {
                (Route::Data, "scan") => Ok(Queued::Scan(args.to_vec(), 1)),
                (Route::Data, "dm.scan") => Ok(Queued::Scan(args.to_vec(), 2)),
                (Route::Data, _) => Command::parse(args).map(Queued::Data).map_err(Reply::Error),
                (Route::Conn, _) => Ok(Queued::Conn(spec, args.to_vec())),
            }
        };
        match item {
            Ok(q) => {
                if let Some(m) = self.multi.as_mut() {
                    m.push(q);
                }
                batch.reply(Reply::simple("QUEUED"));
            }
            Err(e) => {
                self.multi_dirty = true;
                batch.reply(e);
            }
        }
    }

    #[allow(clippy::too_many_lines)]
    async fn conn_command(
        &mut self,
        spec: &Spec,
        args: &[Bytes],
        batch: &mut Batch,
        out: &mut BytesMut,
    ) {
        let core = Rc::clone(&self.core);
        let sub = args.get(1).map(|a| lower(a));
        let sub = sub.as_deref().unwrap_or("");
        let r = match spec.name {
            "ping" => {
                if self.proto == Protocol::Resp2 && self.sub_count() > 0 {
                    let msg = args.get(1).cloned().unwrap_or_default();
                    Reply::Array(vec![bulk(Bytes::from_static(b"pong")), Reply::Bulk(msg)])
                } else if args.len() > 2 {
                    Reply::Error(CommandError::WrongArity("ping".into()))
                } else if let Some(m) = args.get(1) {
                    Reply::Bulk(m.clone())
                } else {
                    Reply::simple("PONG")
                }
            }
            "echo" => Reply::Bulk(args[1].clone()),
            "hello" => return self.hello(args, batch),
            "auth" => {
                let (user, pass) = if args.len() == 2 {
                    (&b"default"[..], &args[1])
                } else if args.len() == 3 {
                    (&args[1][..], &args[2])
                } else {
                    return batch.reply(Reply::Error(CommandError::Syntax));
                };
                let want = &core.shared.config.net.requirepass;
                if want.is_empty() {
                    err("AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
                } else if user == b"default" && ct_eq(pass, want.as_bytes()) {
                    self.authed = true;
                    ok()
                } else {
                    return batch.push(raw_error(WRONGPASS));
                }
            }
            "select" => {
                if args[1].as_ref() == b"0" {
                    ok()
                } else {
                    err("DB index is out of range")
                }
            }
            "quit" => {
                self.closing = true;
                ok()
            }
            "reset" => {
                self.reset();
                Reply::simple("RESET")
            }
            "client" => self.client(sub, args).await,
            "info" => {
                let sections: Vec<String> = args[1..].iter().map(|a| lower(a)).collect();
                Reply::Bulk(Bytes::from(info::info(&core, &sections).await))
            }
            "config" => info::config(&core, sub, args).await,
            "command" => command(sub, args),
            "time" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Reply::Array(vec![
                    bulk(now.as_secs().to_string()),
                    bulk(now.subsec_micros().to_string()),
                ])
            }
            "lastsave" => Reply::Int(
                (runtime::now_ms() / 1000) as i64 - core.shared.started.elapsed().as_secs() as i64,
            ),
            "slowlog" => self.slowlog(sub, args).await,
            "cluster"
            | "cluster.members"
            | "cluster.routingtable"
            | "readonly"
            | "readwrite"
            | "asking" => crate::cluster::surface::command(&core, spec.name, args).await,
            "memory" => match sub {
                "usage" if args.len() >= 3 => {
                    let cmd = Command::parse(args);
                    match cmd {
                        Ok(cmd) => {
                            let owner = core.owner(&args[2]);
                            core.call(owner, vec![Op::Cmd(cmd)])
                                .await
                                .pop()
                                .unwrap_or(Reply::Nil)
                        }
                        Err(e) => Reply::Error(e),
                    }
                }
                "doctor" => bulk(Bytes::from_static(
                    b"Sam, I detected no issues in this instance.",
                )),
                _ => err(&format!(
                    "unknown subcommand '{}'. Try MEMORY HELP.",
                    String::from_utf8_lossy(&args[1])
                )),
            },
            "shutdown" => {
                let shared = &core.shared;
                shared
                    .shutdown_requested
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = shared.shutdown_requests.try_send(());
                for c in 0..shared.cores {
                    if c != core.id {
                        let _ = core.call(c, vec![Op::Shutdown]).await;
                    }
                }
                core.execute(Op::Shutdown, runtime::now_ms());
                // Redis closes the connection without a reply when it shuts down.
                self.closing = true;
                return;
            }
            "subscribe" | "psubscribe" => {
                return self.subscribe(spec.name == "psubscribe", &args[1..], batch)
            }
            "unsubscribe" | "punsubscribe" => {
                return self.unsubscribe(spec.name == "punsubscribe", &args[1..], batch)
            }
            "publish" if crate::cluster::wide::active(&core) => {
                let n = crate::cluster::wide::publish(&core, &args[1], &args[2]).await;
                return batch.reply(Reply::Int(n));
            }
            "publish" => {
                let ops = |_| Op::Publish {
                    channel: args[1].clone(),
                    message: args[2].clone(),
                };
                let parts: Vec<Part> = (0..core.shared.cores)
                    .map(|c| batch.op(&core, c, ops(c)))
                    .collect();
                return batch.push(Out::Merge(dispatch::Merge::Sum, parts));
            }
            "pubsub" => return self.pubsub(sub, args, batch),
            "multi" => {
                if self.multi.is_some() {
                    err("MULTI calls can not be nested")
                } else {
                    self.multi = Some(Vec::new());
                    self.multi_dirty = false;
                    ok()
                }
            }
            "discard" => {
                if self.multi.take().is_some() {
                    self.watched.clear();
                    ok()
                } else {
                    err("DISCARD without MULTI")
                }
            }
            "exec" => return self.exec(batch, out).await,
            "watch" => {
                if self.multi.is_some() {
                    err("WATCH inside MULTI is not allowed")
                } else {
                    self.watch(&args[1..]).await
                }
            }
            "unwatch" => {
                self.watched.clear();
                ok()
            }
            _ => err(&format!("unknown command '{}'", spec.name)),
        };
        batch.reply(r);
    }

    fn hello(&mut self, args: &[Bytes], batch: &mut Batch) {
        let mut proto = self.proto;
        let mut i = 1;
        if let Some(v) = args.get(1) {
            match v.as_ref() {
                b"2" => proto = Protocol::Resp2,
                b"3" => proto = Protocol::Resp3,
                _ => {
                    return batch.push(raw_error("NOPROTO unsupported protocol version"));
                }
            }
            i = 2;
        }
        let mut name = None;
        while i < args.len() {
            let opt = lower(&args[i]);
            if opt == "auth" && i + 2 < args.len() {
                let want = &self.core.shared.config.net.requirepass;
                let ok_user = args[i + 1].as_ref() == b"default";
                if want.is_empty() || !ok_user || !ct_eq(&args[i + 2], want.as_bytes()) {
                    if want.is_empty() {
                        return batch.reply(err("AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"));
                    }
                    return batch.push(raw_error(WRONGPASS));
                }
                self.authed = true;
                i += 3;
            } else if opt == "setname" && i + 1 < args.len() {
                name = Some(args[i + 1].clone());
                i += 2;
            } else {
                return batch.reply(err(&format!(
                    "Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&args[i])
                )));
            }
        }
        if !self.authed {
            return batch.push(raw_error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"));
        }
        if let Some(n) = name {
            *self.entry.name.borrow_mut() = n;
        }
        self.proto = proto;
        self.entry
            .resp
            .set(if proto == Protocol::Resp3 { 3 } else { 2 });
        let b = |s: &'static str| Reply::Bulk(Bytes::from_static(s.as_bytes()));
        batch.reply(Reply::Map(vec![
            (b("server"), b("redis")),
            (b("version"), b("7.2.0")),
            (
                b("proto"),
                Reply::Int(if proto == Protocol::Resp3 { 3 } else { 2 }),
            ),
            (b("id"), Reply::Int(self.entry.id as i64)),
            (b("mode"), b("standalone")),
            (b("role"), b("master")),
            (b("modules"), Reply::Array(Vec::new())),
        ]));
    }

    fn reset(&mut self) {
        self.multi = None;
        self.multi_dirty = false;
        self.watched.clear();
        self.unsubscribe_all();
        self.proto = Protocol::Resp2;
        self.entry.resp.set(2);
        *self.entry.name.borrow_mut() = Bytes::new();
        self.authed = self.core.shared.config.net.requirepass.is_empty();
    }

    fn unsubscribe_all(&mut self) {
        self.subs.clear();
        self.psubs.clear();
        self.core.pubsub.borrow_mut().remove_conn(self.entry.id);
        self.sub_queue = None;
    }

    async fn client(&mut self, sub: &str, args: &[Bytes]) -> Reply {
        let core = Rc::clone(&self.core);
        match (sub, args.len()) {
            ("id", 2) => Reply::Int(self.entry.id as i64),
            ("setname", 3) => {
                if args[2].iter().any(|&c| c <= b' ' || c > b'~') {
                    return err(
                        "Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                *self.entry.name.borrow_mut() = args[2].clone();
                ok()
            }
            ("getname", 2) => {
                let n = self.entry.name.borrow().clone();
                if n.is_empty() {
                    Reply::Nil
                } else {
                    Reply::Bulk(n)
                }
            }
            ("info", 2) => Reply::Bulk(Bytes::from(core.client_list(Some(self.entry.id)))),
            ("list", _) => {
                let mut text = String::new();
                for c in 0..core.shared.cores {
                    if let Some(Reply::Bulk(b)) = core.call(c, vec![Op::ClientList]).await.pop() {
                        text.push_str(&String::from_utf8_lossy(&b));
                    }
                }
                Reply::Bulk(Bytes::from(text))
            }
            ("kill", n) if n >= 3 => {
                let (id, addr) = if n == 3 {
                    (None, Some(args[2].clone()))
                } else {
                    let what = lower(&args[2]);
                    match what.as_str() {
                        "id" => match std::str::from_utf8(&args[3])
                            .ok()
                            .and_then(|s| s.parse().ok())
                        {
                            Some(id) => (Some(id), None),
                            None => return Reply::Error(CommandError::NotInteger),
                        },
                        "addr" => (None, Some(args[3].clone())),
                        _ => return Reply::Error(CommandError::Syntax),
                    }
                };
                let mut killed = 0;
                for c in 0..core.shared.cores {
                    if let Some(Reply::Int(k)) = core
                        .call(
                            c,
                            vec![Op::ClientKill {
                                id,
                                addr: addr.clone(),
                            }],
                        )
                        .await
                        .pop()
                    {
                        killed += k;
                    }
                }
                if n == 3 {
                    if killed == 0 {
                        err("No such client")
                    } else {
                        ok()
                    }
                } else {
                    Reply::Int(killed)
                }
            }
            ("no-evict" | "no-touch", 3) => ok(),
            ("setinfo", 4) => ok(),
            ("reply", 3) => ok(),
            _ => err(&format!(
                "unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(&args[1])
            )),
        }
    }

    async fn slowlog(&mut self, sub: &str, args: &[Bytes]) -> Reply {
        let core = Rc::clone(&self.core);
        let cores = core.shared.cores;
        match sub {
            "get" => {
                let n = match args.get(2) {
                    None => 10,
                    Some(a) => match std::str::from_utf8(a)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                    {
                        Some(n) if n < 0 => usize::MAX,
                        Some(n) => n as usize,
                        None => return Reply::Error(CommandError::NotInteger),
                    },
                };
                let mut all = Vec::new();
                for c in 0..cores {
                    if let Some(Reply::Array(v)) = core.call(c, vec![Op::SlowlogGet(n)]).await.pop()
                    {
                        all.extend(v);
                    }
                }
                all.truncate(n);
                Reply::Array(all)
            }
            "len" => {
                let mut n = 0;
                for c in 0..cores {
                    if let Some(Reply::Int(k)) = core.call(c, vec![Op::SlowlogLen]).await.pop() {
                        n += k;
                    }
                }
                Reply::Int(n)
            }
            "reset" => {
                for c in 0..cores {
                    core.call(c, vec![Op::SlowlogReset]).await;
                }
                ok()
            }
            _ => err(&format!(
                "unknown subcommand '{}'. Try SLOWLOG HELP.",
                String::from_utf8_lossy(&args[1])
            )),
        }
    }

    fn push_frame(&self, items: &[Reply]) -> Out {
        let mut b = BytesMut::new();
        encode(&Reply::Array(items.to_vec()), self.proto, &mut b);
        if self.proto == Protocol::Resp3 {
            b[0] = b'>';
        }
        Out::Raw(b.freeze())
    }

    fn subscribe(&mut self, pattern: bool, names: &[Bytes], batch: &mut Batch) {
        let cap = self.core.shared.config.net.pubsub_pending_max;
        let id = self.entry.id;
        let (sub, _) = self
            .sub_queue
            .get_or_insert_with(|| pubsub::subscriber(id, cap));
        let sub = Rc::clone(sub);
        let kind: &'static [u8] = if pattern { b"psubscribe" } else { b"subscribe" };
        for n in names {
            if pattern {
                self.psubs.insert(n.clone());
                self.core.pubsub.borrow_mut().psubscribe(n.clone(), &sub);
            } else {
                self.subs.insert(n.clone());
                self.core.pubsub.borrow_mut().subscribe(n.clone(), &sub);
            }
            let frame = self.push_frame(&[
                Reply::Bulk(Bytes::from_static(kind)),
                Reply::Bulk(n.clone()),
                Reply::Int(self.sub_count() as i64),
            ]);
            batch.push(frame);
        }
    }

    fn unsubscribe(&mut self, pattern: bool, names: &[Bytes], batch: &mut Batch) {
        let kind: &'static [u8] = if pattern {
            b"punsubscribe"
        } else {
            b"unsubscribe"
        };
        let names: Vec<Bytes> = if names.is_empty() {
            let set = if pattern { &self.psubs } else { &self.subs };
            set.iter().cloned().collect()
        } else {
            names.to_vec()
        };
        if names.is_empty() {
            let frame = self.push_frame(&[
                Reply::Bulk(Bytes::from_static(kind)),
                Reply::Nil,
                Reply::Int(self.sub_count() as i64),
            ]);
            batch.push(frame);
        }
        for n in names {
            if pattern {
                self.psubs.remove(&n);
                self.core
                    .pubsub
                    .borrow_mut()
                    .punsubscribe(&n, self.entry.id);
            } else {
                self.subs.remove(&n);
                self.core.pubsub.borrow_mut().unsubscribe(&n, self.entry.id);
            }
            let frame = self.push_frame(&[
                Reply::Bulk(Bytes::from_static(kind)),
                Reply::Bulk(n),
                Reply::Int(self.sub_count() as i64),
            ]);
            batch.push(frame);
        }
        if self.sub_count() == 0 {
            self.sub_queue = None;
        }
    }

    fn pubsub(&mut self, sub: &str, args: &[Bytes], batch: &mut Batch) {
        let core = Rc::clone(&self.core);
        let cores = core.shared.cores;
        match sub {
            "channels" => {
                let pattern = args.get(2).cloned();
                let parts = (0..cores)
                    .map(|c| {
                        batch.op(
                            &core,
                            c,
                            Op::PubsubChannels {
                                pattern: pattern.clone(),
                            },
                        )
                    })
                    .collect();
                batch.push(Out::Merge(dispatch::Merge::Concat, parts));
            }
            "numsub" => {
                let channels: Vec<Bytes> = args[2..].to_vec();
                let parts: Vec<Part> = (0..cores)
                    .map(|c| {
                        batch.op(
                            &core,
                            c,
                            Op::PubsubNumsub {
                                channels: channels.clone(),
                            },
                        )
                    })
                    .collect();
                batch.push(Out::Merge(dispatch::Merge::Numsub { channels }, parts));
            }
            "numpat" => {
                let parts = (0..cores)
                    .map(|c| batch.op(&core, c, Op::PubsubNumpat))
                    .collect();
                batch.push(Out::Merge(dispatch::Merge::Sum, parts));
            }
            _ => batch.reply(err(&format!(
                "unknown subcommand '{}'. Try PUBSUB HELP.",
                String::from_utf8_lossy(&args[1])
            ))),
        }
    }

    /// WATCH: records the version of every key. Every watched key of a connection must live
    /// on one core, so that EXEC can check them all in the same step as that core's commands;
    /// a WATCH that would break this is refused and changes nothing.
    async fn watch(&mut self, keys: &[Bytes]) -> Reply {
        let core = Rc::clone(&self.core);
        let owner = core.owner(&keys[0]);
        let spans = keys
            .iter()
            .map(|k| &k[..])
            .chain(self.watched.iter().map(|(_, k, _)| &k[..]))
            .any(|k| core.owner(k) != owner);
        if spans {
            return err(&format!(
                "WATCH keys must all live on one core of this node ({} cores); put them under one {{hash tag}}",
                core.shared.cores
            ));
        }
        let map = Bytes::from_static(DEFAULT_MAP);
        let ops = keys
            .iter()
            .map(|k| Op::KeyVersion {
                map: map.clone(),
                key: k.clone(),
            })
            .collect();
        let versions = core.call(owner, ops).await;
        for (k, v) in keys.iter().zip(versions) {
            let version = match v {
                Reply::Int(n) => Some(n as u64),
                _ => None,
            };
            self.watched.push((map.clone(), k.clone(), version));
        }
        ok()
    }

    /// EXEC: runs the queued commands in order and answers them as one array. Commands on
    /// keys of one core run back to back on that core (nothing else touches its shard in
    /// between); keyless and multi-core commands are split per core like outside MULTI, so the
    /// transaction is atomic per core, not across cores. Commands that must consult other
    /// cores themselves (INFO, CONFIG, CLIENT, SLOWLOG, MEMORY) split it at their position.
    /// The watched keys (all on one core) are checked in the same step as the first commands
    /// of that core, before anything runs elsewhere: a changed key means nothing ran (`*-1`).
    async fn exec(&mut self, batch: &mut Batch, out: &mut BytesMut) {
        let Some(queued) = self.multi.take() else {
            return batch.reply(err("EXEC without MULTI"));
        };
        let watched = std::mem::take(&mut self.watched);
        if self.multi_dirty {
            self.multi_dirty = false;
            return batch.push(raw_error(
                "EXECABORT Transaction discarded because of previous errors.",
            ));
        }
        let core = Rc::clone(&self.core);
        if core.cluster.borrow().enabled {
            // Cluster mode: Redis Cluster's rule, every key (queued and watched) in one slot,
            // and that slot served here.
            let mut slots = HashSet::new();
            for q in &queued {
                if let Queued::Data(c) = q {
                    slots.extend(c.keys().into_iter().map(|k| tessera_engine::key_slot(k)));
                }
            }
            slots.extend(watched.iter().map(|(_, k, _)| tessera_engine::key_slot(k)));
            if slots.len() > 1 {
                return batch.push(raw_error(dispatch::CROSSSLOT));
            }
            if let Some(&slot) = slots.iter().next() {
                if let Err(refused) = crate::cluster::admit_slot(&core, slot, true) {
                    return batch.push(refused);
                }
            }
        }
        let mut check = watched
            .first()
            .map(|(_, k, _)| core.owner(k))
            .map(|w| (w, watched));
        let mut tx = Batch::deferred(core.shared.cores);
        let mut items: Vec<Result<Reply, Bytes>> = Vec::with_capacity(queued.len());
        for q in queued {
            match q {
                Queued::Data(cmd) => {
                    let o = dispatch::route(&core, &mut tx, cmd);
                    tx.push(o);
                }
                Queued::Scan(args, at) => {
                    let o = dispatch::route_scan(&core, &mut tx, &args, at);
                    tx.push(o);
                }
                Queued::Conn(spec, args) => {
                    if awaits_other_cores(spec.name)
                        && !tx.run_atomic(&core, check.take(), &mut items).await
                    {
                        return batch.reply(Reply::NilArray);
                    }
                    // Boxed: conn_command is what called us.
                    Box::pin(self.conn_command(spec, &args, &mut tx, out)).await;
                }
            }
        }
        if !tx.run_atomic(&core, check.take(), &mut items).await {
            return batch.reply(Reply::NilArray);
        }
        let mut b = BytesMut::new();
        b.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
        for item in items {
            match item {
                Ok(r) => encode(&r, self.proto, &mut b),
                Err(raw) => b.extend_from_slice(&raw),
            }
        }
        batch.push(Out::Raw(b.freeze()));
    }
}

fn unknown(args: &[Bytes]) -> CommandError {
    let name = String::from_utf8_lossy(&args[0])
        .chars()
        .take(128)
        .collect::<String>();
    let mut rest = String::new();
    for a in &args[1..] {
        if rest.len() >= 128 {
            break;
        }
        rest.push('\'');
        rest.push_str(
            &String::from_utf8_lossy(a)
                .chars()
                .take(128)
                .collect::<String>(),
        );
        rest.push_str("' ");
    }
    CommandError::UnknownCommand(name, rest)
}

fn command(sub: &str, args: &[Bytes]) -> Reply {
    let all = commands::COMMANDS;
    match sub {
        "" => Reply::Array(all.iter().map(commands::info_reply).collect()),
        "count" => Reply::Int(all.len() as i64),
        "list" => Reply::Array(all.iter().map(|s| bulk(s.name)).collect()),
        "info" => {
            if args.len() == 2 {
                return Reply::Array(all.iter().map(commands::info_reply).collect());
            }
            Reply::Array(
                args[2..]
                    .iter()
                    .map(|n| commands::lookup(n).map_or(Reply::NilArray, commands::info_reply))
                    .collect(),
            )
        }
        "docs" => {
            let specs: Vec<&Spec> = if args.len() == 2 {
                all.iter().collect()
            } else {
                args[2..]
                    .iter()
                    .filter_map(|n| commands::lookup(n))
                    .collect()
            };
            Reply::Map(
                specs
                    .into_iter()
                    .map(|s| (bulk(s.name), commands::docs_reply(s)))
                    .collect(),
            )
        }
        "getkeys" => {
            if args.len() < 3 {
                return Reply::Error(CommandError::WrongArity("command|getkeys".into()));
            }
            let target = &args[2..];
            let Some(spec) = commands::lookup(&target[0]) else {
                return err("Invalid command specified");
            };
            if !spec.arity_ok(target.len()) {
                return err("Invalid number of arguments specified for command");
            }
            if spec.route == Route::Data {
                match Command::parse(target) {
                    Ok(c) if !c.keys().is_empty() => {
                        return Reply::Array(
                            c.keys().into_iter().cloned().map(Reply::Bulk).collect(),
                        )
                    }
                    Ok(_) => return err("The command has no key arguments"),
                    Err(e) => return Reply::Error(e),
                }
            }
            let pos = spec.key_positions(target.len());
            if pos.is_empty() {
                return err("The command has no key arguments");
            }
            Reply::Array(
                pos.into_iter()
                    .map(|i| Reply::Bulk(target[i].clone()))
                    .collect(),
            )
        }
        _ => err(&format!(
            "unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}

/// Serves one accepted connection until it closes, the client is killed, or the core shuts
/// down (after answering everything already read).
pub async fn serve(core: Rc<Core>, stream: TcpStream) {
    let shared = Rc::clone(&core).shared.clone();
    let net = &shared.config.net;
    let _ = stream.set_nodelay(true);
    let n = shared
        .clients
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut stream = stream;
    if n >= net.connections_max {
        shared
            .clients
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        core.stats
            .rejected_connections
            .set(core.stats.rejected_connections.get() + 1);
        let _ = stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        return;
    }
    let id = shared
        .next_client_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let entry = Rc::new(ClientEntry {
        id,
        addr: stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        laddr: stream
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        created: Instant::now(),
        name: std::cell::RefCell::new(Bytes::new()),
        last_cmd: std::cell::RefCell::new("NULL"),
        resp: Cell::new(2),
        killed: Signal::new(),
    });
    core.clients.borrow_mut().insert(id, Rc::clone(&entry));
    core.stats.connections.set(core.stats.connections.get() + 1);
    core.stats
        .connections_total
        .set(core.stats.connections_total.get() + 1);

    let mut conn = Conn::new(Rc::clone(&core), Rc::clone(&entry));
    let mut parser = Parser::new(shared.config.protocol.clone());
    let mut rbuf = BytesMut::with_capacity(net.read_bytes);
    let mut scratch = vec![0u8; net.read_bytes];
    let mut out = BytesMut::with_capacity(4096);
    let depth = net.pipeline_depth_max;
    let mut batch = Batch::new(shared.cores);
    let mut drain_until: Option<Instant> = None;
    'conn: loop {
        // 1. Take every complete request already buffered (up to the pipeline limit).
        let mut reqs = Vec::new();
        let mut fatal = None;
        while reqs.len() < depth {
            match parser.parse(&mut rbuf) {
                Ok(Some(args)) => reqs.push(args),
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        let full = reqs.len() == depth;
        if !reqs.is_empty() {
            conn.latency.begin();
            batch.begin();
            for args in reqs {
                conn.handle(args, &mut batch, &mut out).await;
                if conn.closing {
                    break;
                }
            }
            batch.finish(&core, conn.proto, &mut out).await;
        }
        if let Some(e) = &fatal {
            resp::encode_error(&e.to_string(), &mut out);
        }
        if !out.is_empty() {
            core.stats
                .net_out_bytes
                .set(core.stats.net_out_bytes.get() + out.len() as u64);
            if stream.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        conn.latency.end(&shared.latency[core.id]);
        if fatal.is_some() || conn.closing || entry.killed.is_fired() {
            break;
        }
        if full {
            continue; // more requests may already be buffered
        }
        if core.shutdown.is_fired() {
            // Shutting down: requests the client sent before the stop may still sit unread in
            // the socket. Keep reading and answering while they arrive, and close once the
            // socket stays quiet for `shutdown_quiet_ms` (or the grace is up). This polls and
            // yields instead of sleeping on a timer: glommio 0.9 was seen (gdb) to park in
            // io_uring_enter for good with a timer pending during shutdown under load, and a
            // hung shutdown is worse than a few milliseconds of spinning while stopping.
            let now = Instant::now();
            let until = *drain_until.get_or_insert_with(|| {
                now + std::time::Duration::from_millis(net.shutdown_grace_ms)
            });
            let quiet_until =
                (now + std::time::Duration::from_millis(net.shutdown_quiet_ms)).min(until);
            loop {
                match futures_lite::future::poll_once(stream.read(&mut scratch)).await {
                    Some(Ok(n)) if n > 0 => {
                        core.stats
                            .net_in_bytes
                            .set(core.stats.net_in_bytes.get() + n as u64);
                        rbuf.extend_from_slice(&scratch[..n]);
                        continue 'conn;
                    }
                    Some(_) => break 'conn,
                    None if Instant::now() >= quiet_until => break 'conn,
                    None => runtime::yield_now().await,
                }
            }
        }
        // 2. Wait for bytes, a pub/sub message, a kill, or shutdown.
        loop {
            enum Ev {
                Read(std::io::Result<usize>),
                Push(Option<PushMsg>),
                Stop,
            }
            let read = async { Ev::Read(stream.read(&mut scratch).await) };
            let stop = async {
                futures_lite::future::or(entry.killed.wait(), core.shutdown.wait()).await;
                Ev::Stop
            };
            let ev = if let Some((_, rx)) = &conn.sub_queue {
                let push = async { Ev::Push(rx.recv().await) };
                futures_lite::future::or(stop, futures_lite::future::or(push, read)).await
            } else {
                futures_lite::future::or(stop, read).await
            };
            match ev {
                // Shutdown: back to the top, which drains what was already sent.
                Ev::Stop if !entry.killed.is_fired() => continue 'conn,
                Ev::Read(Ok(0) | Err(_)) | Ev::Stop | Ev::Push(None) => break 'conn,
                Ev::Read(Ok(n)) => {
                    core.stats
                        .net_in_bytes
                        .set(core.stats.net_in_bytes.get() + n as u64);
                    rbuf.extend_from_slice(&scratch[..n]);
                    break;
                }
                Ev::Push(Some(m)) => {
                    write_push(&m, conn.proto, &mut out);
                    if let Some((_, rx)) = &conn.sub_queue {
                        while let Some(Some(m)) = futures_lite::future::poll_once(rx.recv()).await {
                            write_push(&m, conn.proto, &mut out);
                            if out.len() >= net.reply_flush_bytes {
                                break;
                            }
                        }
                    }
                    if stream.write_all(&out).await.is_err() {
                        break 'conn;
                    }
                    out.clear();
                }
            }
        }
    }
    conn.unsubscribe_all();
    let _ = stream.close().await;
    core.clients.borrow_mut().remove(&id);
    core.stats
        .connections
        .set(core.stats.connections.get().saturating_sub(1));
    shared
        .clients
        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
}

fn write_push(m: &PushMsg, proto: Protocol, out: &mut BytesMut) {
    match &m.pattern {
        Some(p) => encode_push(&[b"pmessage", p, &m.channel, &m.message], proto, out),
        None => encode_push(&[b"message", &m.channel, &m.message], proto, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"secret", b"secret2"));
        assert!(!ct_eq(b"", b"x"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn unknown_command_text() {
        let e = unknown(&[Bytes::from_static(b"FOO"), Bytes::from_static(b"a")]);
        assert_eq!(
            e.to_string(),
            "ERR unknown command 'FOO', with args beginning with: 'a' "
        );
    }
}
