//! `DMap`: the typed DMap API (Olric's operations), over any [`Execute`] backend.
//!
//! The same `DMap` value works on an embedded node and on a remote server: the backend only has
//! to run one command (its arguments as bytes) and return the protocol-neutral `Reply`. So
//! switching between embedded and client-server mode is a constructor change.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_engine::Reply;

use crate::Error;

/// Runs one command and returns its reply. An error reply may come back either as
/// `Ok(Reply::Error(..))` (the embedded node) or as `Err(Error::Reply(..))` (a remote server);
/// the typed API treats both alike. Other `Err`s mean the backend cannot run commands at all
/// (shut down, disconnected).
pub trait Execute {
    fn execute(&self, args: Vec<Bytes>) -> Result<Reply, Error>;
}

impl<E: Execute + ?Sized> Execute for &E {
    fn execute(&self, args: Vec<Bytes>) -> Result<Reply, Error> {
        (**self).execute(args)
    }
}

/// Options of [`DMap::put`]: TTL and an existence condition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    ttl: Option<Duration>,
    cond: Option<bool>,
}

impl PutOptions {
    /// No TTL (the map's default TTL applies, if configured), no condition.
    pub fn new() -> PutOptions {
        PutOptions::default()
    }

    /// Expire the entry `ttl` after the write (millisecond precision, at least 1 ms).
    pub fn ttl(ttl: Duration) -> PutOptions {
        PutOptions::new().with_ttl(ttl)
    }

    /// Sets the TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> PutOptions {
        self.ttl = Some(ttl);
        self
    }

    /// Write only if the key is absent (`NX`).
    pub fn nx(mut self) -> PutOptions {
        self.cond = Some(false);
        self
    }

    /// Write only if the key is present (`XX`).
    pub fn xx(mut self) -> PutOptions {
        self.cond = Some(true);
        self
    }
}

/// An entry with its metadata, from [`DMap::get_entry`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: Bytes,
    /// Absolute expiry deadline, Unix ms; 0 when the entry has no TTL.
    pub ttl_ms: u64,
    /// Time of the last write, Unix ms.
    pub timestamp_ms: u64,
    /// Time of the last access (coarse), Unix ms.
    pub last_access_ms: u64,
}

/// A handle on one named map. Cheap to clone when the backend is.
#[derive(Clone, Debug)]
pub struct DMap<E> {
    backend: E,
    name: Bytes,
}

fn b(s: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(s.as_ref())
}

fn duration_ms(d: Duration) -> Bytes {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    Bytes::from(ms.to_string())
}

fn unexpected(command: &'static str, reply: &Reply) -> Error {
    Error::UnexpectedReply {
        command,
        reply: format!("{reply:?}"),
    }
}

impl<E: Execute> DMap<E> {
    /// A handle on map `name` served by `backend`. Maps are created by their first write.
    pub fn new(backend: E, name: impl AsRef<[u8]>) -> DMap<E> {
        DMap {
            backend,
            name: b(name),
        }
    }

    /// The map's name.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    fn run(&self, args: Vec<Bytes>) -> Result<Reply, Error> {
        match self.backend.execute(args)? {
            Reply::Error(e) => Err(Error::from_reply_text(&e.to_string())),
            reply => Ok(reply),
        }
    }

    fn cmd(&self, name: &'static str, key: &[u8]) -> Vec<Bytes> {
        vec![
            Bytes::from_static(name.as_bytes()),
            self.name.clone(),
            b(key),
        ]
    }

    /// Stores `value` under `key`. Returns false when an NX/XX condition was not met.
    pub fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        options: PutOptions,
    ) -> Result<bool, Error> {
        let mut args = self.cmd("DM.PUT", key.as_ref());
        args.push(b(value));
        if let Some(ttl) = options.ttl {
            args.push(Bytes::from_static(b"PX"));
            args.push(duration_ms(ttl));
        }
        match options.cond {
            Some(false) => args.push(Bytes::from_static(b"NX")),
            Some(true) => args.push(Bytes::from_static(b"XX")),
            None => {}
        }
        match self.run(args) {
            Ok(Reply::Ok) => Ok(true),
            Ok(other) => Err(unexpected("DM.PUT", &other)),
            Err(Error::Reply(text))
                if text.starts_with("KEYFOUND") || text.starts_with("KEYNOTFOUND") =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The value of `key`, or `None` when it is absent or expired.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, Error> {
        match self.run(self.cmd("DM.GET", key.as_ref())) {
            Ok(Reply::Bulk(v)) => Ok(Some(v)),
            Ok(Reply::Nil) => Ok(None),
            Ok(other) => Err(unexpected("DM.GET", &other)),
            Err(Error::Reply(text)) if text.starts_with("KEYNOTFOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The entry of `key` with its TTL and timestamps, or `None` when absent.
    pub fn get_entry(&self, key: impl AsRef<[u8]>) -> Result<Option<Entry>, Error> {
        let reply = match self.run(self.cmd("DM.GETENTRY", key.as_ref())) {
            Ok(reply) => reply,
            Err(Error::Reply(text)) if text.starts_with("KEYNOTFOUND") => return Ok(None),
            Err(e) => return Err(e),
        };
        let fields: Vec<(Reply, Reply)> = match reply {
            Reply::Map(pairs) => pairs,
            Reply::Array(items) if items.len() % 2 == 0 => {
                let mut it = items.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                pairs
            }
            Reply::Nil => return Ok(None),
            other => return Err(unexpected("DM.GETENTRY", &other)),
        };
        let mut entry = Entry {
            value: Bytes::new(),
            ttl_ms: 0,
            timestamp_ms: 0,
            last_access_ms: 0,
        };
        for (k, v) in fields {
            let name = match &k {
                Reply::Bulk(s) | Reply::Simple(s) => s.clone(),
                other => return Err(unexpected("DM.GETENTRY", other)),
            };
            let int = |v: &Reply| match v {
                Reply::Int(n) => Ok(u64::try_from(*n).unwrap_or(0)),
                other => Err(unexpected("DM.GETENTRY", other)),
            };
            match &name[..] {
                b"value" => match v {
                    Reply::Bulk(bytes) => entry.value = bytes,
                    other => return Err(unexpected("DM.GETENTRY", &other)),
                },
                b"ttl" => entry.ttl_ms = int(&v)?,
                b"timestamp" => entry.timestamp_ms = int(&v)?,
                b"last_access" | b"lastaccess" => entry.last_access_ms = int(&v)?,
                _ => {}
            }
        }
        Ok(Some(entry))
    }

    /// Deletes `keys`; returns how many existed.
    pub fn delete<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<u64, Error> {
        let mut args = vec![Bytes::from_static(b"DM.DEL"), self.name.clone()];
        args.extend(keys.iter().map(b));
        match self.run(args) {
            Ok(Reply::Int(n)) => Ok(u64::try_from(n).unwrap_or(0)),
            Ok(other) => Err(unexpected("DM.DEL", &other)),
            // A cluster refuses keys of several slots in one command (as Redis Cluster does):
            // delete per slot instead, like cluster clients split DEL. Not atomic across slots.
            Err(Error::Reply(text)) if text.starts_with("CROSSSLOT") => {
                let mut by_slot: std::collections::BTreeMap<u16, Vec<Bytes>> =
                    std::collections::BTreeMap::new();
                for k in keys {
                    by_slot
                        .entry(tessera_engine::key_slot(k.as_ref()))
                        .or_default()
                        .push(b(k));
                }
                let mut deleted = 0;
                for (_, group) in by_slot {
                    let mut args = vec![Bytes::from_static(b"DM.DEL"), self.name.clone()];
                    args.extend(group);
                    match self.run(args)? {
                        Reply::Int(n) => deleted += u64::try_from(n).unwrap_or(0),
                        other => return Err(unexpected("DM.DEL", &other)),
                    }
                }
                Ok(deleted)
            }
            Err(e) => Err(e),
        }
    }

    /// Sets `key` to expire `ttl` from now. Returns false when the key is absent.
    pub fn expire(&self, key: impl AsRef<[u8]>, ttl: Duration) -> Result<bool, Error> {
        let mut args = self.cmd("DM.PEXPIRE", key.as_ref());
        args.push(duration_ms(ttl));
        match self.run(args) {
            Ok(Reply::Ok | Reply::Int(1)) => Ok(true),
            Ok(Reply::Int(0)) => Ok(false),
            Ok(other) => Err(unexpected("DM.PEXPIRE", &other)),
            Err(Error::Reply(text)) if text.starts_with("KEYNOTFOUND") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds `delta` to the integer at `key` (absent counts as 0); the TTL is kept.
    pub fn incr(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64, Error> {
        let mut args = self.cmd("DM.INCR", key.as_ref());
        args.push(Bytes::from(delta.to_string()));
        match self.run(args)? {
            Reply::Int(n) => Ok(n),
            other => Err(unexpected("DM.INCR", &other)),
        }
    }

    /// Subtracts `delta` from the integer at `key`; the TTL is kept.
    pub fn decr(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64, Error> {
        let mut args = self.cmd("DM.DECR", key.as_ref());
        args.push(Bytes::from(delta.to_string()));
        match self.run(args)? {
            Reply::Int(n) => Ok(n),
            other => Err(unexpected("DM.DECR", &other)),
        }
    }

    /// Adds `delta` to the float at `key`; the TTL is kept.
    pub fn incr_by_float(&self, key: impl AsRef<[u8]>, delta: f64) -> Result<f64, Error> {
        let mut args = self.cmd("DM.INCRBYFLOAT", key.as_ref());
        args.push(Bytes::from(delta.to_string()));
        match self.run(args)? {
            Reply::Bulk(text) => std::str::from_utf8(&text)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| unexpected("DM.INCRBYFLOAT", &Reply::Bulk(text.clone()))),
            Reply::Double(d) => Ok(d),
            other => Err(unexpected("DM.INCRBYFLOAT", &other)),
        }
    }

    /// Stores `value` and returns the previous value, atomically.
    pub fn get_put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<Option<Bytes>, Error> {
        let mut args = self.cmd("DM.GETPUT", key.as_ref());
        args.push(b(value));
        match self.run(args)? {
            Reply::Bulk(v) => Ok(Some(v)),
            Reply::Nil => Ok(None),
            other => Err(unexpected("DM.GETPUT", &other)),
        }
    }

    /// Replaces the value of `key` with `new` if it currently equals `expected` (`None`: if it is
    /// absent), atomically on the owner. Returns whether it swapped.
    pub fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<&[u8]>,
        new: impl AsRef<[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool, Error> {
        let mut args = self.cmd("DM.CAS", key.as_ref());
        args.push(b(expected.unwrap_or_default()));
        args.push(b(new));
        if let Some(ttl) = ttl {
            args.push(Bytes::from_static(b"PX"));
            args.push(duration_ms(ttl));
        }
        match self.run(args)? {
            Reply::Int(n) => Ok(n == 1),
            other => Err(unexpected("DM.CAS", &other)),
        }
    }

    /// Takes the lock on `key`, waiting up to `wait` for it; the lock expires after `lease`
    /// unless extended. Fails with [`Error::LockNotAcquired`] when the wait runs out. As in
    /// Olric, the lock is an entry of this map under `key` holding the token, so a key that
    /// holds a value cannot be locked: use a map (or key prefix) of its own for locks.
    pub fn lock(
        &self,
        key: impl AsRef<[u8]>,
        wait: Duration,
        lease: Duration,
    ) -> Result<LockGuard<'_, E>, Error> {
        let key = b(key);
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(1);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut args = self.cmd("DM.LOCK", &key);
            args.push(Bytes::from(remaining.as_secs().to_string()));
            args.push(Bytes::from_static(b"PX"));
            args.push(duration_ms(lease));
            match self.run(args) {
                Ok(Reply::Simple(token) | Reply::Bulk(token)) => {
                    return Ok(LockGuard {
                        dmap: self,
                        key,
                        token,
                        held: true,
                    })
                }
                Ok(other) => return Err(unexpected("DM.LOCK", &other)),
                // The backend may wait by itself (the server does); whatever it did, retry here
                // until our own deadline so every backend honours `wait`.
                Err(Error::LockNotAcquired) if Instant::now() < deadline => {
                    std::thread::sleep(pause.min(deadline - Instant::now()));
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// All keys of the map matching `pattern` (a Redis glob; `None` for all), walking the whole
    /// node or cluster with one cursor. A key present for the whole walk is returned at least once.
    pub fn scan(&self, pattern: Option<&str>) -> Result<Vec<Bytes>, Error> {
        let mut cursor = Bytes::from_static(b"0");
        let mut keys = Vec::new();
        loop {
            let mut args = vec![Bytes::from_static(b"DM.SCAN"), self.name.clone(), cursor];
            if let Some(p) = pattern {
                args.push(Bytes::from_static(b"MATCH"));
                args.push(b(p));
            }
            args.push(Bytes::from_static(b"COUNT"));
            args.push(Bytes::from_static(b"1000"));
            match self.run(args)? {
                Reply::Array(mut parts) if parts.len() == 2 => {
                    let batch = parts.pop();
                    let next = parts.pop();
                    match (next, batch) {
                        (Some(Reply::Bulk(next)), Some(Reply::Array(batch))) => {
                            for k in batch {
                                match k {
                                    Reply::Bulk(k) => keys.push(k),
                                    other => return Err(unexpected("DM.SCAN", &other)),
                                }
                            }
                            if &next[..] == b"0" {
                                return Ok(keys);
                            }
                            cursor = next;
                        }
                        _ => return Err(Error::Unavailable("malformed DM.SCAN reply".into())),
                    }
                }
                other => return Err(unexpected("DM.SCAN", &other)),
            }
        }
    }

    /// Removes the whole map (on every node).
    pub fn destroy(&self) -> Result<(), Error> {
        match self.run(vec![Bytes::from_static(b"DM.DESTROY"), self.name.clone()])? {
            Reply::Ok => Ok(()),
            other => Err(unexpected("DM.DESTROY", &other)),
        }
    }
}

/// A held lock. `unlock` releases it; dropping the guard releases it too (errors ignored: the
/// lease bounds how long a lost unlock keeps the lock).
#[derive(Debug)]
pub struct LockGuard<'a, E: Execute> {
    dmap: &'a DMap<E>,
    key: Bytes,
    token: Bytes,
    held: bool,
}

impl<E: Execute> LockGuard<'_, E> {
    /// The lock's token.
    pub fn token(&self) -> &[u8] {
        &self.token
    }

    /// Extends the lock to expire `lease` from now.
    pub fn lease(&self, lease: Duration) -> Result<(), Error> {
        let mut args = self.dmap.cmd("DM.PLOCKLEASE", &self.key);
        args.push(self.token.clone());
        args.push(duration_ms(lease));
        match self.dmap.run(args)? {
            Reply::Ok => Ok(()),
            other => Err(unexpected("DM.PLOCKLEASE", &other)),
        }
    }

    /// Releases the lock.
    pub fn unlock(mut self) -> Result<(), Error> {
        self.held = false;
        self.release()
    }

    fn release(&self) -> Result<(), Error> {
        let mut args = self.dmap.cmd("DM.UNLOCK", &self.key);
        args.push(self.token.clone());
        match self.dmap.run(args)? {
            Reply::Ok => Ok(()),
            other => Err(unexpected("DM.UNLOCK", &other)),
        }
    }
}

impl<E: Execute> Drop for LockGuard<'_, E> {
    fn drop(&mut self) {
        if self.held {
            let _ = self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use tessera_engine::config::EngineConfig;
    use tessera_engine::shard::Shard;
    use tessera_engine::Command;

    use super::*;

    /// A backend that runs commands on one engine shard with a simulated clock.
    struct ShardBackend {
        shard: RefCell<Shard>,
        now_ms: Cell<u64>,
    }

    impl ShardBackend {
        fn new() -> ShardBackend {
            ShardBackend {
                shard: RefCell::new(Shard::new(EngineConfig::default())),
                now_ms: Cell::new(1_700_000_000_000),
            }
        }
    }

    impl Execute for ShardBackend {
        fn execute(&self, args: Vec<Bytes>) -> Result<Reply, Error> {
            Ok(match Command::parse(&args) {
                Ok(cmd) => self.shard.borrow_mut().execute(cmd, self.now_ms.get()),
                Err(e) => Reply::Error(e),
            })
        }
    }

    #[test]
    fn put_get_conditions_and_delete() {
        let backend = ShardBackend::new();
        let m = DMap::new(&backend, "users");
        assert_eq!(m.get("alice").unwrap(), None);
        assert!(m.put("alice", "1", PutOptions::new()).unwrap());
        assert!(!m.put("alice", "2", PutOptions::new().nx()).unwrap());
        assert!(!m.put("bob", "2", PutOptions::new().xx()).unwrap());
        assert_eq!(m.get("alice").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(m.delete(&["alice", "bob"]).unwrap(), 1);
        assert_eq!(m.get("alice").unwrap(), None);
        // Maps are separate namespaces.
        let other = DMap::new(&backend, "other");
        m.put("k", "in-users", PutOptions::new()).unwrap();
        assert_eq!(other.get("k").unwrap(), None);
    }

    #[test]
    fn ttl_entry_metadata_and_expiry() {
        let backend = ShardBackend::new();
        let m = DMap::new(&backend, "sessions");
        let t0 = backend.now_ms.get();
        m.put("s", "v", PutOptions::ttl(Duration::from_secs(10)))
            .unwrap();
        let e = m.get_entry("s").unwrap().unwrap();
        assert_eq!(&e.value[..], b"v");
        assert_eq!(e.ttl_ms, t0 + 10_000);
        assert_eq!(e.timestamp_ms, t0);
        assert!(m.expire("s", Duration::from_secs(1)).unwrap());
        assert!(!m.expire("missing", Duration::from_secs(1)).unwrap());
        backend.now_ms.set(t0 + 1_001);
        assert_eq!(m.get("s").unwrap(), None);
        assert_eq!(m.get_entry("s").unwrap(), None);
    }

    #[test]
    fn atomic_operations() {
        let backend = ShardBackend::new();
        let m = DMap::new(&backend, "counters");
        assert_eq!(m.incr("c", 5).unwrap(), 5);
        assert_eq!(m.decr("c", 2).unwrap(), 3);
        assert!((m.incr_by_float("f", 1.5).unwrap() - 1.5).abs() < f64::EPSILON);
        m.put("s", "text", PutOptions::new()).unwrap();
        assert!(matches!(m.incr("s", 1), Err(Error::Reply(t)) if t.contains("not an integer")));
        assert_eq!(m.get_put("g", "1").unwrap(), None);
        assert_eq!(m.get_put("g", "2").unwrap().as_deref(), Some(&b"1"[..]));
        assert!(!m.compare_and_swap("g", Some(b"1"), "3", None).unwrap());
        assert!(m.compare_and_swap("g", Some(b"2"), "3", None).unwrap());
        assert!(m.compare_and_swap("new", None, "x", None).unwrap());
        assert!(!m.compare_and_swap("new", None, "y", None).unwrap());
        assert_eq!(m.get("g").unwrap().as_deref(), Some(&b"3"[..]));
    }

    #[test]
    fn locks_exclude_and_release() {
        let backend = ShardBackend::new();
        let m = DMap::new(&backend, "locks");
        let guard = m
            .lock("res", Duration::ZERO, Duration::from_secs(30))
            .unwrap();
        assert!(matches!(
            m.lock("res", Duration::from_millis(5), Duration::from_secs(30)),
            Err(Error::LockNotAcquired)
        ));
        guard.lease(Duration::from_secs(60)).unwrap();
        guard.unlock().unwrap();
        let again = m
            .lock("res", Duration::ZERO, Duration::from_secs(30))
            .unwrap();
        drop(again);
        // Dropping the guard released it.
        assert!(m
            .lock("res", Duration::ZERO, Duration::from_secs(1))
            .is_ok());
    }

    #[test]
    fn scan_and_destroy() {
        let backend = ShardBackend::new();
        let m = DMap::new(&backend, "docs");
        for i in 0..2500 {
            m.put(format!("doc:{i}"), "x", PutOptions::new()).unwrap();
        }
        m.put("other", "x", PutOptions::new()).unwrap();
        let mut keys = m.scan(Some("doc:*")).unwrap();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 2500);
        assert_eq!(m.scan(None).unwrap().len(), 2501);
        m.destroy().unwrap();
        assert!(m.scan(None).unwrap().is_empty());
    }
}
