//! The command table: one row per command with Redis's arity, flags and key positions.
//!
//! Owns the facts every other part looks up: arity errors are decided here before anything is
//! parsed, [`Route`] says how the dispatcher treats the command (connection-level, routed to a
//! key's owner core, split over cores, fanned out to all cores), and `COMMAND`, `COMMAND
//! COUNT|INFO|DOCS|GETKEYS` are answered from the same rows.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use tessera_engine::Reply;

/// How the dispatcher treats a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Handled by the connection itself (connection and server commands, pub/sub, MULTI ...).
    Conn,
    /// A data command: parsed by the engine, routed by its keys (or fanned out when keyless).
    Data,
}

/// One command.
#[derive(Debug)]
pub struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis arity: `n > 0` exactly n arguments (name included), `n < 0` at least `-n`.
    pub arity: i32,
    /// Redis command flags (`write`, `readonly`, `denyoom`, `fast`, ...).
    pub flags: &'static [&'static str],
    /// Position of the first key (0 = no keys).
    pub first_key: i32,
    /// Position of the last key (-1 = the last argument).
    pub last_key: i32,
    /// Step between keys.
    pub step: i32,
    pub route: Route,
    /// Redis's command group (for COMMAND DOCS).
    pub group: &'static str,
    pub summary: &'static str,
}

impl Spec {
    /// True when `argc` (name included) satisfies the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        let a = i64::from(self.arity);
        if a >= 0 {
            argc == a
        } else {
            argc >= -a
        }
    }

    /// The key positions of a concrete argument list (COMMAND GETKEYS, routing of conn-level
    /// commands). Empty when the command has no keys.
    pub fn key_positions(&self, argc: usize) -> Vec<usize> {
        if self.first_key <= 0 {
            return Vec::new();
        }
        let last = if self.last_key < 0 {
            argc as i64 + i64::from(self.last_key)
        } else {
            i64::from(self.last_key)
        };
        let mut out = Vec::new();
        let mut i = i64::from(self.first_key);
        while i <= last && (i as usize) < argc {
            out.push(i as usize);
            i += i64::from(self.step.max(1));
        }
        out
    }
}

const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "denyoom", "fast"];
const WD: &[&str] = &["write"];
const WDF: &[&str] = &["write", "fast"];
const R: &[&str] = &["readonly"];
const RF: &[&str] = &["readonly", "fast"];
const C: &[&str] = &["fast", "stale", "loading", "noscript"];
const CA: &[&str] = &["noauth", "fast", "stale", "loading", "noscript"];
const A: &[&str] = &["admin", "noscript", "loading", "stale"];
const PS: &[&str] = &["pubsub", "noscript", "loading", "stale"];
const TX: &[&str] = &["noscript", "loading", "stale", "fast"];
const CL: &[&str] = &["fast", "loading", "stale"];

macro_rules! spec {
    ($name:expr, $arity:expr, $flags:expr, $first:expr, $last:expr, $step:expr, $route:ident,
     $group:expr, $summary:expr) => {
        Spec {
            name: $name,
            arity: $arity,
            flags: $flags,
            first_key: $first,
            last_key: $last,
            step: $step,
            route: Route::$route,
            group: $group,
            summary: $summary,
        }
    };
}

/// Every command the node knows.
pub static COMMANDS: &[Spec] = &[
    // strings
    spec!("get", 2, RF, 1, 1, 1, Data, "string", "Returns the string value of a key."),
    spec!("set", -3, W, 1, 1, 1, Data, "string", "Sets the string value of a key."),
    spec!("setnx", 3, WF, 1, 1, 1, Data, "string", "Set the string value of a key only when the key doesn't exist."),
    spec!("setex", 4, W, 1, 1, 1, Data, "string", "Sets the string value and expiration time of a key."),
    spec!("psetex", 4, W, 1, 1, 1, Data, "string", "Sets both string value and expiration time in milliseconds of a key."),
    spec!("getset", 3, WF, 1, 1, 1, Data, "string", "Returns the previous string value of a key after setting it to a new value."),
    spec!("getdel", 2, WDF, 1, 1, 1, Data, "string", "Returns the string value of a key after deleting the key."),
    spec!("getex", -2, WDF, 1, 1, 1, Data, "string", "Returns the string value of a key after setting its expiration time."),
    spec!("mget", -2, RF, 1, -1, 1, Data, "string", "Atomically returns the string values of one or more keys."),
    spec!("mset", -3, W, 1, -1, 2, Data, "string", "Atomically creates or modifies the string values of one or more keys."),
    spec!("msetnx", -3, W, 1, -1, 2, Data, "string", "Atomically modifies the string values of one or more keys only when all keys don't exist."),
    spec!("append", 3, WF, 1, 1, 1, Data, "string", "Appends a string to the value of a key. Creates the key if it doesn't exist."),
    spec!("strlen", 2, RF, 1, 1, 1, Data, "string", "Returns the length of a string value."),
    spec!("getrange", 4, R, 1, 1, 1, Data, "string", "Returns a substring of the string stored at a key."),
    spec!("setrange", 4, W, 1, 1, 1, Data, "string", "Overwrites a part of a string value with another by an offset."),
    spec!("incr", 2, WF, 1, 1, 1, Data, "string", "Increments the integer value of a key by one."),
    spec!("decr", 2, WF, 1, 1, 1, Data, "string", "Decrements the integer value of a key by one."),
    spec!("incrby", 3, WF, 1, 1, 1, Data, "string", "Increments the integer value of a key by a number."),
    spec!("decrby", 3, WF, 1, 1, 1, Data, "string", "Decrements a number from the integer value of a key."),
    spec!("incrbyfloat", 3, WF, 1, 1, 1, Data, "string", "Increment the floating point value of a key by a number."),
    // keys
    spec!("del", -2, WD, 1, -1, 1, Data, "generic", "Deletes one or more keys."),
    spec!("unlink", -2, WDF, 1, -1, 1, Data, "generic", "Asynchronously deletes one or more keys."),
    spec!("exists", -2, RF, 1, -1, 1, Data, "generic", "Determines whether one or more keys exist."),
    spec!("touch", -2, RF, 1, -1, 1, Data, "generic", "Returns the number of existing keys out of those specified after updating the time they were last accessed."),
    spec!("type", 2, RF, 1, 1, 1, Data, "generic", "Determines the type of value stored at a key."),
    spec!("expire", -3, WDF, 1, 1, 1, Data, "generic", "Sets the expiration time of a key in seconds."),
    spec!("pexpire", -3, WDF, 1, 1, 1, Data, "generic", "Sets the expiration time of a key in milliseconds."),
    spec!("expireat", -3, WDF, 1, 1, 1, Data, "generic", "Sets the expiration time of a key to a Unix timestamp."),
    spec!("pexpireat", -3, WDF, 1, 1, 1, Data, "generic", "Sets the expiration time of a key to a Unix milliseconds timestamp."),
    spec!("ttl", 2, RF, 1, 1, 1, Data, "generic", "Returns the expiration time in seconds of a key."),
    spec!("pttl", 2, RF, 1, 1, 1, Data, "generic", "Returns the expiration time in milliseconds of a key."),
    spec!("expiretime", 2, RF, 1, 1, 1, Data, "generic", "Returns the expiration time of a key as a Unix timestamp."),
    spec!("pexpiretime", 2, RF, 1, 1, 1, Data, "generic", "Returns the expiration time of a key as a Unix milliseconds timestamp."),
    spec!("persist", 2, WDF, 1, 1, 1, Data, "generic", "Removes the expiration time of a key."),
    spec!("rename", 3, WD, 1, 2, 1, Data, "generic", "Renames a key and overwrites the destination."),
    spec!("renamenx", 3, WDF, 1, 2, 1, Data, "generic", "Renames a key only when the target key name doesn't exist."),
    spec!("scan", -2, R, 0, 0, 0, Data, "generic", "Iterates over the key names in the database."),
    spec!("keys", 2, R, 0, 0, 0, Data, "generic", "Returns all key names that match a pattern."),
    spec!("randomkey", 1, R, 0, 0, 0, Data, "generic", "Returns a random key name from the database."),
    spec!("dbsize", 1, RF, 0, 0, 0, Data, "server", "Returns the number of keys in the database."),
    spec!("flushdb", -1, WD, 0, 0, 0, Data, "server", "Removes all keys from the current database."),
    spec!("flushall", -1, WD, 0, 0, 0, Data, "server", "Removes all keys from all databases."),
    // DMaps (Olric syntax; the key is the third argument)
    spec!("dm.put", -4, W, 2, 2, 1, Data, "dmap", "Sets the value of a key in a DMap."),
    spec!("dm.get", 3, RF, 2, 2, 1, Data, "dmap", "Returns the value of a key in a DMap."),
    spec!("dm.getentry", 3, RF, 2, 2, 1, Data, "dmap", "Returns a key's value with its TTL, timestamp and last access."),
    spec!("dm.del", -3, WD, 2, -1, 1, Data, "dmap", "Deletes keys from a DMap."),
    spec!("dm.expire", 4, WDF, 2, 2, 1, Data, "dmap", "Sets a key's TTL in seconds."),
    spec!("dm.pexpire", 4, WDF, 2, 2, 1, Data, "dmap", "Sets a key's TTL in milliseconds."),
    spec!("dm.incr", 4, WF, 2, 2, 1, Data, "dmap", "Increments an integer value."),
    spec!("dm.decr", 4, WF, 2, 2, 1, Data, "dmap", "Decrements an integer value."),
    spec!("dm.incrbyfloat", 4, WF, 2, 2, 1, Data, "dmap", "Increments a float value."),
    spec!("dm.getput", -4, W, 2, 2, 1, Data, "dmap", "Sets a value and returns the old one."),
    spec!("dm.cas", -5, W, 2, 2, 1, Data, "dmap", "Compare-and-swap of a value."),
    spec!("dm.lock", -4, W, 2, 2, 1, Data, "dmap", "Takes a lock on a key, waiting up to a deadline."),
    spec!("dm.unlock", 4, WD, 2, 2, 1, Data, "dmap", "Releases a lock."),
    spec!("dm.locklease", 5, WD, 2, 2, 1, Data, "dmap", "Extends a held lock (seconds)."),
    spec!("dm.plocklease", 5, WD, 2, 2, 1, Data, "dmap", "Extends a held lock (milliseconds)."),
    spec!("dm.scan", -3, R, 0, 0, 0, Data, "dmap", "Iterates over the keys of a DMap on every core."),
    spec!("dm.destroy", 2, WD, 0, 0, 0, Data, "dmap", "Removes a DMap."),
    spec!("dm.stats", -1, R, 0, 0, 0, Data, "dmap", "Statistics of one or all DMaps."),
    spec!("dm.config", -5, A, 0, 0, 0, Data, "dmap", "Changes a DMap setting at run time."),
    // connection
    spec!("ping", -1, C, 0, 0, 0, Conn, "connection", "Returns the server's liveliness response."),
    spec!("echo", 2, C, 0, 0, 0, Conn, "connection", "Returns the given string."),
    spec!("hello", -1, CA, 0, 0, 0, Conn, "connection", "Handshakes with the Redis server."),
    spec!("auth", -2, CA, 0, 0, 0, Conn, "connection", "Authenticates the connection."),
    spec!("select", 2, C, 0, 0, 0, Conn, "connection", "Changes the selected database."),
    spec!("quit", -1, CA, 0, 0, 0, Conn, "connection", "Closes the connection."),
    spec!("reset", 1, CA, 0, 0, 0, Conn, "connection", "Resets the connection."),
    spec!("client", -2, C, 0, 0, 0, Conn, "connection", "A container for client connection commands."),
    // server
    spec!("info", -1, A, 0, 0, 0, Conn, "server", "Returns information and statistics about the server."),
    spec!("config", -2, A, 0, 0, 0, Conn, "server", "A container for server configuration commands."),
    spec!("command", -1, C, 0, 0, 0, Conn, "server", "Returns detailed information about all commands."),
    spec!("time", 1, C, 0, 0, 0, Conn, "server", "Returns the server time."),
    spec!("slowlog", -2, A, 0, 0, 0, Conn, "server", "A container for slow log commands."),
    spec!("memory", -2, R, 0, 0, 0, Conn, "server", "A container for memory diagnostics commands."),
    spec!("shutdown", -1, A, 0, 0, 0, Conn, "server", "Synchronously saves the database(s) to disk and shuts down the Redis server."),
    spec!("lastsave", 1, C, 0, 0, 0, Conn, "server", "Returns the Unix timestamp of the last successful save to disk."),
    // cluster
    spec!("cluster", -2, A, 0, 0, 0, Conn, "cluster", "A container for Redis Cluster commands."),
    spec!("cluster.members", 1, A, 0, 0, 0, Conn, "cluster", "Members of the cluster as this node sees them (Olric style)."),
    spec!("cluster.routingtable", 1, A, 0, 0, 0, Conn, "cluster", "The partition table this node routes by (Olric style)."),
    spec!("readonly", 1, CL, 0, 0, 0, Conn, "cluster", "Enables read-only queries for a connection to a Redis Cluster replica node."),
    spec!("readwrite", 1, CL, 0, 0, 0, Conn, "cluster", "Enables read-write queries for a connection to a Redis Cluster replica node."),
    spec!("asking", 1, CL, 0, 0, 0, Conn, "cluster", "Signals that a cluster client is following an -ASK redirect."),
    // pub/sub
    spec!("subscribe", -2, PS, 0, 0, 0, Conn, "pubsub", "Listens for messages published to channels."),
    spec!("psubscribe", -2, PS, 0, 0, 0, Conn, "pubsub", "Listens for messages published to channels that match one or more patterns."),
    spec!("unsubscribe", -1, PS, 0, 0, 0, Conn, "pubsub", "Stops listening to messages posted to channels."),
    spec!("punsubscribe", -1, PS, 0, 0, 0, Conn, "pubsub", "Stops listening to messages published to channels that match one or more patterns."),
    spec!("publish", 3, PS, 0, 0, 0, Conn, "pubsub", "Posts a message to a channel."),
    spec!("pubsub", -2, PS, 0, 0, 0, Conn, "pubsub", "A container for Pub/Sub commands."),
    // transactions
    spec!("multi", 1, TX, 0, 0, 0, Conn, "transactions", "Starts a transaction."),
    spec!("exec", 1, TX, 0, 0, 0, Conn, "transactions", "Executes all commands in a transaction."),
    spec!("discard", 1, TX, 0, 0, 0, Conn, "transactions", "Discards a transaction."),
    spec!("watch", -2, TX, 1, -1, 1, Conn, "transactions", "Monitors changes to keys to determine the execution of a transaction."),
    spec!("unwatch", 1, TX, 0, 0, 0, Conn, "transactions", "Forgets about watched keys of a transaction."),
];

fn index() -> &'static HashMap<&'static str, &'static Spec> {
    static INDEX: OnceLock<HashMap<&'static str, &'static Spec>> = OnceLock::new();
    INDEX.get_or_init(|| COMMANDS.iter().map(|s| (s.name, s)).collect())
}

/// Looks a command up by name in any case.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    let mut buf = [0u8; 32];
    if name.len() > buf.len() {
        return None;
    }
    let lower = &mut buf[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let lower = std::str::from_utf8(lower).ok()?;
    index().get(lower).copied()
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

fn status(s: &'static str) -> Reply {
    Reply::simple(s)
}

/// The `COMMAND INFO` entry of one command (Redis 7 layout, ACL categories, tips, key specs
/// and subcommands left empty).
pub fn info_reply(s: &Spec) -> Reply {
    Reply::Array(vec![
        bulk(s.name),
        Reply::Int(i64::from(s.arity)),
        Reply::Array(s.flags.iter().map(|f| status(f)).collect()),
        Reply::Int(i64::from(s.first_key)),
        Reply::Int(i64::from(s.last_key)),
        Reply::Int(i64::from(s.step)),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

/// The `COMMAND DOCS` entry of one command: a map with summary and group.
pub fn docs_reply(s: &Spec) -> Reply {
    Reply::Map(vec![
        (bulk("summary"), bulk(s.summary)),
        (bulk("since"), bulk("1.0.0")),
        (bulk("group"), bulk(s.group)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_lowercase_and_short() {
        let mut seen = std::collections::HashSet::new();
        for s in COMMANDS {
            assert!(seen.insert(s.name), "duplicate {}", s.name);
            assert_eq!(s.name, s.name.to_ascii_lowercase());
            assert!(s.name.len() <= 32);
            assert!(s.arity != 0);
        }
    }

    #[test]
    fn lookup_any_case_and_arity() {
        let get = lookup(b"GeT").unwrap();
        assert!(get.arity_ok(2));
        assert!(!get.arity_ok(3));
        let set = lookup(b"SET").unwrap();
        assert!(set.arity_ok(3) && set.arity_ok(9) && !set.arity_ok(2));
        assert!(lookup(b"nope").is_none());
        assert!(lookup(&[b'a'; 100]).is_none());
    }

    #[test]
    fn key_positions() {
        let mset = lookup(b"mset").unwrap();
        assert_eq!(mset.key_positions(5), vec![1, 3]);
        let del = lookup(b"del").unwrap();
        assert_eq!(del.key_positions(4), vec![1, 2, 3]);
        let dmput = lookup(b"dm.put").unwrap();
        assert_eq!(dmput.key_positions(4), vec![2]);
        assert!(lookup(b"ping").unwrap().key_positions(1).is_empty());
    }

    #[test]
    fn every_data_command_is_known_to_the_engine() {
        // A data row whose name the engine does not parse would route to nowhere.
        for s in COMMANDS.iter().filter(|s| s.route == Route::Data) {
            let args: Vec<Bytes> = std::iter::once(Bytes::from_static(s.name.as_bytes()))
                .chain((1..8).map(|_| Bytes::from_static(b"1")))
                .collect();
            if let Err(tessera_engine::CommandError::UnknownCommand(..)) =
                tessera_engine::Command::parse(&args)
            {
                panic!("engine does not know {}", s.name);
            }
        }
    }
}
