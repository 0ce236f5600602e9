//! The interactive REPL: rustyline line editing, a history file kept across runs, and Tab
//! completion of command names taken from the server's `COMMAND` reply (a built-in list when the
//! server cannot answer).

use super::dmap;
use super::resp::Reply;
use super::session::{Flow, Session};
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Entries kept in the history file.
pub const HISTORY_ENTRIES_MAX: usize = 1000;

/// Command names offered when `COMMAND` fails: Tessera's documented surface (protocol.md).
const BUILTIN_COMMANDS: &[&str] = &[
    "APPEND",
    "AUTH",
    "CLIENT",
    "CLUSTER",
    "CLUSTER.MEMBERS",
    "CLUSTER.ROUTINGTABLE",
    "COMMAND",
    "CONFIG",
    "DBSIZE",
    "DECR",
    "DECRBY",
    "DEL",
    "DISCARD",
    "DM.CAS",
    "DM.CONFIG",
    "DM.DECR",
    "DM.DEL",
    "DM.DESTROY",
    "DM.EXPIRE",
    "DM.GET",
    "DM.GETENTRY",
    "DM.GETPUT",
    "DM.INCR",
    "DM.INCRBYFLOAT",
    "DM.LOCK",
    "DM.LOCKLEASE",
    "DM.PEXPIRE",
    "DM.PLOCKLEASE",
    "DM.PUT",
    "DM.SCAN",
    "DM.STATS",
    "DM.UNLOCK",
    "ECHO",
    "EXEC",
    "EXISTS",
    "EXPIRE",
    "EXPIREAT",
    "EXPIRETIME",
    "FLUSHALL",
    "FLUSHDB",
    "GET",
    "GETDEL",
    "GETEX",
    "GETRANGE",
    "GETSET",
    "HELLO",
    "INCR",
    "INCRBY",
    "INCRBYFLOAT",
    "INFO",
    "KEYS",
    "LATENCY",
    "MEMORY",
    "MGET",
    "MSET",
    "MSETNX",
    "MULTI",
    "PERSIST",
    "PEXPIRE",
    "PEXPIREAT",
    "PEXPIRETIME",
    "PING",
    "PSETEX",
    "PSUBSCRIBE",
    "PTTL",
    "PUBLISH",
    "PUBSUB",
    "PUNSUBSCRIBE",
    "QUIT",
    "RANDOMKEY",
    "RENAME",
    "RENAMENX",
    "RESET",
    "SCAN",
    "SELECT",
    "SET",
    "SETEX",
    "SETNX",
    "SETRANGE",
    "SHUTDOWN",
    "SLOWLOG",
    "STRLEN",
    "SUBSCRIBE",
    "TIME",
    "TOUCH",
    "TTL",
    "TYPE",
    "UNLINK",
    "UNSUBSCRIBE",
    "UNWATCH",
    "WATCH",
];

/// Words the REPL itself understands.
const REPL_WORDS: &[&str] = &["use", "help", "clear", "quit", "exit"];

/// Completes the first word of a line against a sorted, upper-case list of names.
pub struct CommandCompleter {
    names: Vec<String>,
}

impl CommandCompleter {
    /// A completer over `names` plus the REPL's own words and the map verbs.
    pub fn new<I: IntoIterator<Item = String>>(names: I) -> Self {
        let mut set: BTreeSet<String> = names.into_iter().map(|n| n.to_ascii_uppercase()).collect();
        set.extend(REPL_WORDS.iter().map(|w| w.to_ascii_uppercase()));
        set.extend(dmap::VERBS.iter().map(|(v, _)| v.to_ascii_uppercase()));
        Self {
            names: set.into_iter().collect(),
        }
    }

    /// Names starting with `prefix` (case-insensitive), in the case the user is typing in:
    /// lower case unless the prefix has an upper-case letter.
    pub fn candidates(&self, prefix: &str) -> Vec<String> {
        let upper = prefix.to_ascii_uppercase();
        let lower = !prefix.chars().any(|c| c.is_ascii_uppercase());
        self.names
            .iter()
            .filter(|n| n.starts_with(&upper))
            .map(|n| {
                if lower {
                    n.to_ascii_lowercase()
                } else {
                    n.clone()
                }
            })
            .collect()
    }
}

impl Completer for CommandCompleter {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let before = &line[..pos];
        let start = before.len() - before.trim_start().len();
        // Only the command name (the first word) is completed.
        if before[start..].contains(char::is_whitespace) {
            return Ok((pos, Vec::new()));
        }
        Ok((start, self.candidates(&before[start..])))
    }
}

impl Hinter for CommandCompleter {
    type Hint = String;
}
impl Highlighter for CommandCompleter {}
impl Validator for CommandCompleter {}
impl Helper for CommandCompleter {}

/// Command names from a `COMMAND` reply (each entry is an array whose first element is the
/// name), or `None` when the reply is not that shape.
pub fn command_names(reply: &Reply) -> Option<Vec<String>> {
    let Reply::Array(entries) = reply else {
        return None;
    };
    let names: Vec<String> = entries
        .iter()
        .filter_map(|e| match e {
            Reply::Array(info) => info.first().and_then(Reply::as_text),
            _ => None,
        })
        .collect();
    (!names.is_empty()).then_some(names)
}

/// Where history is kept: `$TESSERA_HISTFILE` if set (empty disables history), else
/// `$XDG_STATE_HOME/tessera/history`, else `$HOME/.tessera_history`.
pub fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TESSERA_HISTFILE") {
        return (!p.is_empty()).then(|| PathBuf::from(p));
    }
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        let dir = PathBuf::from(state).join("tessera");
        // A missing directory only means history is not saved; the REPL still works.
        let _ = std::fs::create_dir_all(&dir);
        return Some(dir.join("history"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".tessera_history"))
}

/// Creates the history file readable by its owner only (it holds what was typed), unless it
/// exists already.
fn create_private(path: &std::path::Path) {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    // Exists already, or cannot be made: history then works (or not) as rustyline finds it.
    let _ = opts.open(path);
}

/// Lines that carry secrets and so are never written to history (as `redis-cli` does).
pub fn is_secret(line: &str) -> bool {
    let words: Vec<String> = line
        .split_whitespace()
        .take(3)
        .map(str::to_ascii_lowercase)
        .collect();
    match words.first().map(String::as_str) {
        Some("auth") => true,
        Some("hello") => line.to_ascii_lowercase().contains("auth"),
        Some("acl") => words.get(1).is_some_and(|w| w == "setuser"),
        Some("config") => {
            words.get(1).is_some_and(|w| w == "set")
                && words
                    .get(2)
                    .is_some_and(|w| w == "requirepass" || w == "masterauth")
        }
        _ => false,
    }
}

/// Runs the REPL until `quit`, `exit` or Ctrl-D. Error replies are part of the conversation
/// there, not a failure of the program, so they do not change the exit status.
pub fn run(session: &mut Session) -> anyhow::Result<()> {
    if let Err(e) = session.connect() {
        println!("{e}");
    }
    let names = session
        .conn_mut()
        .and_then(|c| c.call(&super::conn::args(&["COMMAND"])).ok())
        .and_then(|r| command_names(&r))
        .unwrap_or_else(|| BUILTIN_COMMANDS.iter().map(|s| (*s).to_string()).collect());
    let config = rustyline::Config::builder()
        .max_history_size(HISTORY_ENTRIES_MAX)?
        .history_ignore_dups(true)?
        .auto_add_history(false)
        .build();
    let mut editor: Editor<CommandCompleter, DefaultHistory> = Editor::with_config(config)?;
    editor.set_helper(Some(CommandCompleter::new(names)));
    let history = history_path();
    if let Some(p) = &history {
        create_private(p);
        // A missing or unreadable file is a first run, not an error.
        let _ = editor.load_history(p);
    }
    loop {
        match editor.readline(&session.prompt()) {
            Ok(line) => {
                let trimmed = line.trim();
                if trimmed.is_empty() {
                    continue;
                }
                if !is_secret(trimmed) {
                    let _ = editor.add_history_entry(trimmed);
                    if let Some(p) = &history {
                        if let Err(e) = editor.append_history(p) {
                            eprintln!("warning: could not save history to {}: {e}", p.display());
                        }
                    }
                }
                if session.run_line(trimmed) == Flow::Quit {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => {}
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_first_word_in_the_typed_case() {
        let c = CommandCompleter::new(["get".to_string(), "getdel".into(), "set".into()]);
        assert_eq!(c.candidates("GE"), ["GET", "GETDEL", "GETENTRY", "GETPUT"]);
        assert_eq!(c.candidates("ge"), ["get", "getdel", "getentry", "getput"]);
        assert_eq!(c.candidates("us"), ["use"]);
        assert!(c.candidates("zz").is_empty());
    }

    #[test]
    fn reads_names_from_a_command_reply() {
        let entry =
            |n: &str| Reply::Array(vec![Reply::Bulk(n.as_bytes().to_vec()), Reply::Integer(-2)]);
        let reply = Reply::Array(vec![entry("get"), entry("dm.put")]);
        assert_eq!(command_names(&reply).unwrap(), ["get", "dm.put"]);
        assert_eq!(command_names(&Reply::Error(b"ERR".to_vec())), None);
        assert_eq!(command_names(&Reply::Array(vec![])), None);
    }

    #[test]
    fn secrets_stay_out_of_history() {
        assert!(is_secret("AUTH hunter2"));
        assert!(is_secret("auth user hunter2"));
        assert!(is_secret("HELLO 3 AUTH default hunter2"));
        assert!(is_secret("acl setuser bob on >pw"));
        assert!(is_secret("CONFIG SET requirepass x"));
        assert!(!is_secret("CONFIG SET maxmemory 1mb"));
        assert!(!is_secret("GET auth"));
        assert!(!is_secret("HELLO 3"));
    }
}
