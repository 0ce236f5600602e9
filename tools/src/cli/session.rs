//! A CLI session: one server connection plus what the user selected (`use <dmap>`), and the
//! interpretation of one typed line (built-ins, map verbs, or a command sent as is), reconnection
//! after a broken connection, and following cluster redirects (`-MOVED`, `-ASK`). Shared by the
//! REPL, one-shot mode and stdin mode, so all three behave the same.

use super::conn::{Conn, ConnError, ConnOpts};
use super::dmap::{self, Verb};
use super::format;
use super::help;
use super::resp::Reply;
use super::split::split_args;
use std::io::Write;

/// How replies are printed.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// `redis-cli --raw` output instead of the human form.
    pub raw: bool,
    /// Colour error replies (only when stdout is a terminal).
    pub color: bool,
    /// Print error replies and client-side errors to stderr (one-shot and stdin modes, so stdout
    /// carries only data) instead of stdout (the REPL, like `redis-cli`).
    pub errors_to_stderr: bool,
    /// Buffer stdout instead of writing each reply at once (scripts writing to a pipe or file:
    /// one write per buffer instead of one per line). Flushed by [`Session::flush`], before
    /// anything goes to stderr, and for every streamed message.
    pub buffered: bool,
}

/// Where replies go: stdout, buffered or not, kept in order with stderr.
struct Output {
    out: std::io::BufWriter<std::io::Stdout>,
    buffered: bool,
}

impl Output {
    /// Bytes of stdout buffered before a write, when buffering.
    const BUFFER_BYTES: usize = 64 * 1024;

    fn new(buffered: bool) -> Self {
        Self {
            out: std::io::BufWriter::with_capacity(Self::BUFFER_BYTES, std::io::stdout()),
            buffered,
        }
    }

    fn print(&mut self, bytes: &[u8]) {
        // A closed stdout (`| head`) is not worth a panic; the exit status still reports errors.
        let _ = self.out.write_all(bytes);
        if !self.buffered {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
    }

    /// Writes to stderr after everything printed before it.
    fn eprint(&mut self, bytes: &[u8]) {
        self.flush();
        let _ = std::io::stderr().write_all(bytes);
    }
}

/// Whether to keep reading lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next line.
    Continue,
    /// `quit` or `exit` was typed.
    Quit,
}

/// The most `DM.SCAN` round trips one `scan` verb makes before giving up, so a server that never
/// returns cursor 0 cannot hang the CLI.
pub const SCAN_ROUNDS_MAX: usize = 100_000;

/// The most keys one `scan` verb collects and shows; past it the walk stops with a note to
/// narrow the glob, so a huge map cannot flood the terminal or the CLI's memory.
pub const SCAN_KEYS_MAX: usize = 10_000;

/// Commands after which the server streams messages until the connection closes.
const STREAMING: &[&str] = &["subscribe", "psubscribe", "ssubscribe", "monitor"];

/// Commands whose reply is a push message in RESP3.
const PUSH_REPLY: &[&str] = &[
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
];

/// Redirects followed for one command before its last reply is shown as it is.
pub const REDIRECTS_MAX: usize = 5;

fn push_is_reply(command: &[Vec<u8>]) -> bool {
    let name = command
        .first()
        .map(|c| String::from_utf8_lossy(c).to_ascii_lowercase())
        .unwrap_or_default();
    PUSH_REPLY.contains(&name.as_str())
}

/// A cluster redirect reply: `MOVED <slot> <host>:<port>` or `ASK <slot> <host>:<port>`.
#[derive(Debug, PartialEq, Eq)]
struct Redirect {
    ask: bool,
    slot: u16,
    host: String,
    port: u16,
}

impl Redirect {
    fn parse(reply: &Reply) -> Option<Redirect> {
        let Reply::Error(e) = reply else { return None };
        let text = std::str::from_utf8(e).ok()?;
        let mut words = text.split_whitespace();
        let ask = match words.next()? {
            "MOVED" => false,
            "ASK" => true,
            _ => return None,
        };
        let slot = words.next()?.parse().ok()?;
        let (host, port) = words.next()?.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || words.next().is_some() {
            return None;
        }
        Some(Redirect {
            ask,
            slot,
            host: host.to_string(),
            port: port.parse().ok()?,
        })
    }
}

/// One session.
pub struct Session {
    opts: ConnOpts,
    conn: Option<Conn>,
    dmap: Option<String>,
    /// Inside MULTI (commands are queued until EXEC or DISCARD).
    in_multi: bool,
    style: Style,
    out: Output,
    /// Error replies, client-side errors and connection failures seen so far.
    pub errors: usize,
}

impl Session {
    /// A session that has not connected yet.
    pub fn new(opts: ConnOpts, style: Style) -> Self {
        Self {
            opts,
            conn: None,
            dmap: None,
            in_multi: false,
            style,
            out: Output::new(style.buffered),
            errors: 0,
        }
    }

    /// Connects (or reconnects).
    pub fn connect(&mut self) -> Result<(), ConnError> {
        self.conn = None;
        // A new connection has no transaction open.
        self.in_multi = false;
        self.conn = Some(Conn::connect(&self.opts)?);
        Ok(())
    }

    /// The open connection, if any.
    pub fn conn_mut(&mut self) -> Option<&mut Conn> {
        self.conn.as_mut()
    }

    /// The REPL prompt: `host:port> `, `host:port[map]> ` with a map selected, `(TX)` before
    /// the `>` inside MULTI, or `not connected> `.
    pub fn prompt(&self) -> String {
        let tx = if self.in_multi { "(TX)" } else { "" };
        match (&self.conn, &self.dmap) {
            (None, _) => "not connected> ".into(),
            (Some(c), None) => format!("{}{tx}> ", c.addr()),
            (Some(c), Some(m)) => format!("{}[{m}]{tx}> ", c.addr()),
        }
    }

    /// Runs one typed line.
    pub fn run_line(&mut self, line: &str) -> Flow {
        match split_args(line) {
            Ok(args) => self.run_args(args),
            Err(e) => {
                self.client_error(&format!("Invalid argument(s): {e}"));
                Flow::Continue
            }
        }
    }

    /// Runs one command given as arguments.
    pub fn run_args(&mut self, args: Vec<Vec<u8>>) -> Flow {
        let Some(first) = args.first() else {
            return Flow::Continue;
        };
        let first = String::from_utf8_lossy(first).to_ascii_lowercase();
        match first.as_str() {
            "quit" | "exit" => return Flow::Quit,
            "help" | "?" => {
                match args.get(1) {
                    None => self
                        .out
                        .print(help::general(self.dmap.as_deref()).as_bytes()),
                    Some(topic) => self.help_on(&String::from_utf8_lossy(topic)),
                }
                return Flow::Continue;
            }
            "clear" => {
                self.out.print(b"\x1b[H\x1b[2J");
                return Flow::Continue;
            }
            "use" => {
                match args.len() {
                    1 => self.dmap = None,
                    2 => self.dmap = Some(String::from_utf8_lossy(&args[1]).into_owned()),
                    _ => self.client_error("usage: use [dmap]"),
                }
                return Flow::Continue;
            }
            _ => {}
        }
        let command = match self.dmap.as_deref().and_then(|m| dmap::translate(m, &args)) {
            None => args,
            Some(Verb::Command(c)) => c,
            Some(Verb::Usage(u)) => {
                self.client_error(&format!("usage: {u}"));
                return Flow::Continue;
            }
            Some(Verb::Scan(glob)) => {
                let map = self.dmap.clone().unwrap_or_default();
                self.scan(&map, glob.as_deref());
                return Flow::Continue;
            }
        };
        let streaming = STREAMING.contains(&first.as_str());
        match self.call(&command) {
            Ok(reply) => {
                self.show(&reply);
                if !reply.is_error() {
                    match first.as_str() {
                        "multi" => self.in_multi = true,
                        "exec" | "discard" | "reset" => self.in_multi = false,
                        _ => {}
                    }
                }
                if first == "exec" {
                    // EXEC ends the transaction even when it fails (EXECABORT).
                    self.in_multi = false;
                }
                if streaming && !reply.is_error() {
                    self.stream();
                }
            }
            Err(e) => self.conn_failed(&e),
        }
        Flow::Continue
    }

    /// Sends a command, reconnecting first if the last connection broke, and follows cluster
    /// redirects: `-MOVED` moves the session to the named node (as `redis-cli -c` does), `-ASK`
    /// asks the named node once. RESP3 push messages that arrive before the reply are printed
    /// as they come.
    fn call(&mut self, command: &[Vec<u8>]) -> Result<Reply, ConnError> {
        if self.conn.is_none() {
            self.connect()?;
        }
        let mut reply = self.call_on_session_conn(command)?;
        for _ in 0..REDIRECTS_MAX {
            let Some(redirect) = Redirect::parse(&reply) else {
                break;
            };
            let note = format!(
                "-> Redirected to slot [{}] located at {}:{}\n",
                redirect.slot, redirect.host, redirect.port
            );
            if self.style.errors_to_stderr {
                self.out.eprint(note.as_bytes());
            } else {
                self.out.print(note.as_bytes());
            }
            let target = ConnOpts {
                host: redirect.host,
                port: redirect.port,
                ..self.opts.clone()
            };
            if redirect.ask {
                let mut conn = Conn::connect(&target)?;
                conn.call(&[b"ASKING".to_vec()])?;
                let style = self.style;
                let out = &mut self.out;
                reply = conn.call_with_push(command, push_is_reply(command), &mut |push| {
                    out.print(&render(push, style));
                })?;
            } else {
                self.opts = target;
                self.connect()?;
                reply = self.call_on_session_conn(command)?;
            }
        }
        Ok(reply)
    }

    fn call_on_session_conn(&mut self, command: &[Vec<u8>]) -> Result<Reply, ConnError> {
        let style = self.style;
        let conn = self.conn.as_mut().expect("connected before the call");
        let out = &mut self.out;
        conn.call_with_push(command, push_is_reply(command), &mut |push| {
            out.print(&render(push, style));
        })
    }

    /// After SUBSCRIBE or MONITOR: print what the server sends until the connection ends or the
    /// user presses Ctrl-C (which ends the process, as in `redis-cli`).
    fn stream(&mut self) {
        if !self.style.raw {
            self.out
                .print(b"Reading messages... (press Ctrl-C to quit)\n");
        }
        self.out.flush();
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            match conn.read() {
                Ok(reply) => {
                    self.show(&reply);
                    self.out.flush();
                }
                Err(e) => {
                    self.conn_failed(&e);
                    return;
                }
            }
        }
    }

    /// `scan [glob]` on a map: walks `DM.SCAN` to cursor 0 and prints all keys as one array.
    fn scan(&mut self, map: &str, glob: Option<&[u8]>) {
        let mut keys = Vec::new();
        let mut cursor = b"0".to_vec();
        for _ in 0..SCAN_ROUNDS_MAX {
            let mut cmd = vec![b"DM.SCAN".to_vec(), map.as_bytes().to_vec(), cursor.clone()];
            if let Some(g) = glob {
                cmd.extend([b"MATCH".to_vec(), g.to_vec()]);
            }
            cmd.extend([b"COUNT".to_vec(), b"100".to_vec()]);
            let reply = match self.call(&cmd) {
                Ok(r) => r,
                Err(e) => return self.conn_failed(&e),
            };
            match reply {
                Reply::Array(mut parts) if parts.len() == 2 => {
                    let batch = parts.pop().expect("two parts");
                    let next = parts.pop().expect("two parts");
                    let (Some(next), Reply::Array(batch)) = (next.as_text(), batch) else {
                        return self.client_error("DM.SCAN returned a malformed reply");
                    };
                    keys.extend(batch);
                    let more = next != "0";
                    if keys.len() > SCAN_KEYS_MAX || (keys.len() == SCAN_KEYS_MAX && more) {
                        keys.truncate(SCAN_KEYS_MAX);
                        self.show(&Reply::Array(keys));
                        let note = format!(
                            "(stopped after {SCAN_KEYS_MAX} keys: narrow it with scan <glob>)\n"
                        );
                        return self.out.eprint(note.as_bytes());
                    }
                    if !more {
                        return self.show(&Reply::Array(keys));
                    }
                    cursor = next.into_bytes();
                }
                e @ Reply::Error(_) => return self.show(&e),
                _ => return self.client_error("DM.SCAN returned a malformed reply"),
            }
        }
        self.client_error(&format!(
            "DM.SCAN did not finish within {SCAN_ROUNDS_MAX} round trips"
        ));
    }

    /// `help <topic>`: a map verb's usage when a map is in use, else the server's
    /// `COMMAND DOCS` for it.
    fn help_on(&mut self, topic: &str) {
        let lower = topic.to_ascii_lowercase();
        let verb = dmap::VERBS.iter().find(|(v, _)| *v == lower);
        if let (Some((_, usage)), Some(_)) = (verb, &self.dmap) {
            self.out
                .print(format!("\n  {usage}\n  on the DMap chosen with `use`\n\n").as_bytes());
            return;
        }
        let docs = vec![
            b"COMMAND".to_vec(),
            b"DOCS".to_vec(),
            topic.as_bytes().to_vec(),
        ];
        match self.call(&docs) {
            Ok(reply) => match help::command(topic, &reply) {
                Some(text) => self.out.print(text.as_bytes()),
                None => self.client_error(&format!("no help for '{topic}'")),
            },
            Err(e) => self.conn_failed(&e),
        }
    }

    fn show(&mut self, reply: &Reply) {
        let text = render(reply, self.style);
        if reply.is_error() {
            self.errors += 1;
            if self.style.errors_to_stderr {
                self.out.eprint(&text);
                return;
            }
        }
        self.out.print(&text);
    }

    /// Writes out whatever replies are buffered.
    pub fn flush(&mut self) {
        self.out.flush();
    }

    /// A mistake caught before anything was sent (bad quoting, wrong verb usage).
    fn client_error(&mut self, msg: &str) {
        self.errors += 1;
        let line = format!("(error) {msg}\n");
        if self.style.errors_to_stderr {
            self.out.eprint(line.as_bytes());
        } else {
            self.out.print(line.as_bytes());
        }
    }

    fn conn_failed(&mut self, e: &ConnError) {
        self.errors += 1;
        self.conn = None;
        let line = format!("Error: {e}\n");
        if self.style.errors_to_stderr {
            self.out.eprint(line.as_bytes());
        } else {
            self.out.print(line.as_bytes());
        }
    }
}

fn render(reply: &Reply, style: Style) -> Vec<u8> {
    if style.raw {
        format::raw(reply)
    } else {
        format::human(reply, style.color).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> Reply {
        Reply::Error(s.as_bytes().to_vec())
    }

    #[test]
    fn redirects_are_parsed_from_redis_cluster_errors() {
        assert_eq!(
            Redirect::parse(&err("MOVED 3999 127.0.0.1:6381")),
            Some(Redirect {
                ask: false,
                slot: 3999,
                host: "127.0.0.1".into(),
                port: 6381
            })
        );
        assert_eq!(
            Redirect::parse(&err("ASK 12 [::1]:7000")),
            Some(Redirect {
                ask: true,
                slot: 12,
                host: "::1".into(),
                port: 7000
            })
        );
        for not in [
            "ERR MOVED 1 a:1",
            "MOVED",
            "MOVED x a:1",
            "MOVED 1 nohost",
            "MOVED 1 :1",
            "MOVED 1 a:99999",
            "MOVED 1 a:1 extra",
            "TRYAGAIN Multiple keys request during rehashing of slot",
        ] {
            assert_eq!(Redirect::parse(&err(not)), None, "{not}");
        }
        assert_eq!(
            Redirect::parse(&Reply::Simple(b"MOVED 1 a:1".to_vec())),
            None
        );
    }
}
