//! `Command`: every data command the engine executes, and `Command::parse`, which turns raw RESP
//! arguments into one with Redis's (or Olric's, for `DM.*`) exact arity, option and error rules.
//!
//! Parsing never looks at stored data and never panics; errors that depend on stored data or on
//! the time (`-WRONGTYPE`, expire-time overflow after adding `now`) are found by `Shard::execute`.

use bytes::Bytes;

use crate::config::{EvictionPolicy, MapConfig};
use crate::error::CommandError;
use crate::number::{arg_i64, parse_f64};

/// The largest shard-local SCAN cursor (exclusive): net packs the core index into the top 8 bits.
pub const SCAN_CURSOR_LIMIT: u64 = 1 << 56;

/// Existence condition of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Cond {
    /// Write whether or not the key exists.
    #[default]
    Always,
    /// Only if the key does not exist (`NX`).
    Nx,
    /// Only if the key exists (`XX`).
    Xx,
}

/// What a command does to a key's TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Expiry {
    /// No TTL given: a write removes the old TTL (and applies the map's default TTL, if any);
    /// GETEX leaves the TTL alone.
    #[default]
    Default,
    /// `KEEPTTL`: keep the existing TTL.
    Keep,
    /// `PERSIST`: remove the TTL.
    Persist,
    /// `EX`/`PX`: expire this many milliseconds after `now` (always > 0).
    In(u64),
    /// `EXAT`/`PXAT`: expire at this Unix time in milliseconds (always > 0).
    At(u64),
}

/// `EXPIRE` family conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExpireCond {
    #[default]
    Always,
    Nx,
    Xx,
    Gt,
    Lt,
    /// `LT XX`: the key must have a TTL and the new one must be smaller.
    LtXx,
}

/// Which command produced a `Command::Set` (they differ in reply and error texts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetKind {
    /// `SET`: `+OK` / nil, or the old value with `GET`.
    Set,
    /// `SETNX`: `:1` / `:0`.
    SetNx,
    /// `SETEX`: `+OK`.
    SetEx,
    /// `PSETEX`: `+OK`.
    PSetEx,
    /// `GETSET`: the old value.
    GetSet,
}

impl SetKind {
    /// Lowercase command name used in error texts.
    pub fn name(self) -> &'static str {
        match self {
            SetKind::Set => "set",
            SetKind::SetNx => "setnx",
            SetKind::SetEx => "setex",
            SetKind::PSetEx => "psetex",
            SetKind::GetSet => "getset",
        }
    }
}

/// A per-map option of `DM.CONFIG SET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOption {
    TtlMs(u64),
    MaxIdleMs(u64),
    MaxKeys(u64),
    MaxBytes(u64),
    Eviction(EvictionPolicy),
    LruSamples(usize),
}

impl MapOption {
    /// Applies the option to a map's settings.
    pub fn apply(self, config: &mut MapConfig) {
        match self {
            MapOption::TtlMs(v) => config.ttl_ms = v,
            MapOption::MaxIdleMs(v) => config.max_idle_ms = v,
            MapOption::MaxKeys(v) => config.max_keys = v,
            MapOption::MaxBytes(v) => config.max_bytes = v,
            MapOption::Eviction(p) => config.eviction = Some(p),
            MapOption::LruSamples(n) => config.lru_samples = n,
        }
    }
}

/// One data command. Plain Redis commands act on the map `DEFAULT_MAP`; `Dm*` variants name
/// their map. All fields own their bytes, so a `Command` can be sent to another core.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Get {
        key: Bytes,
    },
    /// SET, SETNX, SETEX, PSETEX, GETSET.
    Set {
        key: Bytes,
        value: Bytes,
        cond: Cond,
        /// `GET` option: reply with the old value.
        get: bool,
        expiry: Expiry,
        kind: SetKind,
    },
    GetDel {
        key: Bytes,
    },
    /// GETEX; `expiry` is `Default` when no option was given (TTL unchanged).
    GetEx {
        key: Bytes,
        expiry: Expiry,
    },
    MGet {
        keys: Vec<Bytes>,
    },
    /// MSET (`nx == false`) and MSETNX.
    MSet {
        pairs: Vec<(Bytes, Bytes)>,
        nx: bool,
    },
    Append {
        key: Bytes,
        value: Bytes,
    },
    StrLen {
        key: Bytes,
    },
    GetRange {
        key: Bytes,
        start: i64,
        end: i64,
    },
    SetRange {
        key: Bytes,
        offset: u64,
        value: Bytes,
    },
    /// INCR, DECR, INCRBY, DECRBY.
    IncrBy {
        key: Bytes,
        delta: i64,
    },
    /// INCRBYFLOAT; `delta` is the validated argument text.
    IncrByFloat {
        key: Bytes,
        delta: Bytes,
    },
    /// DEL and UNLINK: the number of keys removed.
    Del {
        keys: Vec<Bytes>,
    },
    Exists {
        keys: Vec<Bytes>,
    },
    Touch {
        keys: Vec<Bytes>,
    },
    Type {
        key: Bytes,
    },
    /// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT.
    Expire {
        key: Bytes,
        /// The argument as given (seconds or milliseconds, relative or absolute).
        when: i64,
        /// `when` is in milliseconds (PEXPIRE, PEXPIREAT).
        millis: bool,
        /// `when` is a Unix time (EXPIREAT, PEXPIREAT).
        absolute: bool,
        cond: ExpireCond,
    },
    /// TTL (`millis == false`) and PTTL.
    Ttl {
        key: Bytes,
        millis: bool,
    },
    /// EXPIRETIME and PEXPIRETIME.
    ExpireTime {
        key: Bytes,
        millis: bool,
    },
    Persist {
        key: Bytes,
    },
    /// RENAME (`nx == false`) and RENAMENX; both keys must be on this shard.
    Rename {
        from: Bytes,
        to: Bytes,
        nx: bool,
    },
    MemoryUsage {
        key: Bytes,
    },
    /// SCAN with a shard-local cursor (< 2^56).
    Scan {
        cursor: u64,
        pattern: Option<Bytes>,
        count: usize,
        /// `TYPE t`: only `string` matches anything here.
        type_filter: Option<Bytes>,
    },
    Keys {
        pattern: Bytes,
    },
    RandomKey,
    DbSize,
    /// FLUSHDB (`all == false`: the default map) and FLUSHALL (every map of the shard).
    Flush {
        all: bool,
    },
    DmPut {
        map: Bytes,
        key: Bytes,
        value: Bytes,
        expiry: Expiry,
        cond: Cond,
    },
    DmGet {
        map: Bytes,
        key: Bytes,
    },
    DmGetEntry {
        map: Bytes,
        key: Bytes,
    },
    DmDel {
        map: Bytes,
        keys: Vec<Bytes>,
    },
    /// DM.EXPIRE / DM.PEXPIRE: TTL in milliseconds from now.
    DmExpire {
        map: Bytes,
        key: Bytes,
        ttl_ms: u64,
    },
    /// DM.INCR / DM.DECR (negated delta).
    DmIncr {
        map: Bytes,
        key: Bytes,
        delta: i64,
    },
    DmIncrByFloat {
        map: Bytes,
        key: Bytes,
        delta: Bytes,
    },
    DmGetPut {
        map: Bytes,
        key: Bytes,
        value: Bytes,
        expiry: Expiry,
    },
    DmCas {
        map: Bytes,
        key: Bytes,
        /// Empty means "the key must be absent".
        expected: Bytes,
        new: Bytes,
        expiry: Expiry,
    },
    /// One attempt to take a lock; net retries for `wait_ms` while it is held.
    DmLock {
        map: Bytes,
        key: Bytes,
        wait_ms: u64,
        /// Lease in milliseconds (`EX`/`PX`); `None` holds the lock until DM.UNLOCK.
        lease_ms: Option<u64>,
    },
    DmUnlock {
        map: Bytes,
        key: Bytes,
        token: Bytes,
    },
    /// DM.LOCKLEASE / DM.PLOCKLEASE.
    DmLockLease {
        map: Bytes,
        key: Bytes,
        token: Bytes,
        lease_ms: u64,
    },
    DmScan {
        map: Bytes,
        cursor: u64,
        pattern: Option<Bytes>,
        count: usize,
    },
    DmDestroy {
        map: Bytes,
    },
    DmStats {
        map: Option<Bytes>,
    },
    DmConfigSet {
        map: Bytes,
        option: MapOption,
    },
}

fn lower(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_lowercase()
}

fn eq(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// Redis's `unknown command` error: name as given, then up to 128 characters of arguments.
fn unknown_command(args: &[Bytes]) -> CommandError {
    let clean = |b: &[u8], max: usize| -> String {
        let s: String = String::from_utf8_lossy(b)
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        s.chars().take(max).collect()
    };
    let name = clean(args.first().map_or(&b""[..], |a| &a[..]), 128);
    let mut rest = String::new();
    for a in args.iter().skip(1) {
        if rest.len() >= 128 {
            break;
        }
        let room = 128 - rest.len();
        rest.push('\'');
        rest.push_str(&clean(a, room));
        rest.push_str("' ");
    }
    CommandError::UnknownCommand(name, rest)
}

/// Arity check with Redis's convention: `n > 0` exact, `n < 0` at least `-n`.
fn arity(args: &[Bytes], n: i32, name: &str) -> Result<(), CommandError> {
    let len = args.len() as i64;
    let ok = if n >= 0 {
        len == i64::from(n)
    } else {
        len >= -i64::from(n)
    };
    if ok {
        Ok(())
    } else {
        Err(CommandError::WrongArity(name.to_owned()))
    }
}

fn positive_ms(v: i64, seconds: bool, cmd: &str) -> Result<u64, CommandError> {
    // getExpireMillisecondsOrReply: non-positive, or seconds that overflow when multiplied.
    if v <= 0 || (seconds && v > i64::MAX / 1000) {
        return Err(CommandError::InvalidExpireTime(cmd.to_owned()));
    }
    Ok(if seconds { v as u64 * 1000 } else { v as u64 })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ExtMode {
    Set,
    GetEx,
    DmPut,
}

struct ExtArgs {
    cond: Cond,
    get: bool,
    expiry: Expiry,
}

/// Redis's `parseExtendedStringArgumentsOrReply`, plus the DM.PUT/DM.CAS variants.
fn parse_ext(args: &[Bytes], mode: ExtMode, cmd: &str) -> Result<ExtArgs, CommandError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Unit {
        Ex,
        Px,
        ExAt,
        PxAt,
    }
    let mut cond = Cond::Always;
    let mut get = false;
    let mut keep = false;
    let mut persist = false;
    let mut unit: Option<Unit> = None;
    let mut value: Option<&Bytes> = None;
    let mut j = 0;
    while j < args.len() {
        let opt = &args[j];
        let next = args.get(j + 1);
        let can_cond = mode != ExtMode::GetEx;
        let no_expire = unit.is_none();
        if can_cond && eq(opt, "nx") && cond != Cond::Xx {
            cond = Cond::Nx;
        } else if can_cond && eq(opt, "xx") && cond != Cond::Nx {
            cond = Cond::Xx;
        } else if mode == ExtMode::Set && eq(opt, "get") {
            get = true;
        } else if mode == ExtMode::Set && eq(opt, "keepttl") && !persist && no_expire {
            keep = true;
        } else if mode == ExtMode::GetEx && eq(opt, "persist") && no_expire && !keep {
            persist = true;
        } else if let (Some(u), Some(n)) = (
            [
                ("ex", Unit::Ex),
                ("px", Unit::Px),
                ("exat", Unit::ExAt),
                ("pxat", Unit::PxAt),
            ]
            .iter()
            .find(|(w, _)| eq(opt, w))
            .map(|&(_, u)| u),
            next,
        ) {
            // Another expire unit than the one already given is a syntax error; the same
            // unit twice is accepted (the last value wins), as in Redis.
            if keep || persist || unit.is_some_and(|x| x != u) {
                return Err(CommandError::Syntax);
            }
            unit = Some(u);
            value = Some(n);
            j += 1;
        } else {
            return Err(CommandError::Syntax);
        }
        j += 1;
    }
    let expiry = match (unit, value) {
        (Some(u), Some(v)) => {
            let n = arg_i64(v)?;
            match u {
                Unit::Ex => Expiry::In(positive_ms(n, true, cmd)?),
                Unit::Px => Expiry::In(positive_ms(n, false, cmd)?),
                Unit::ExAt => Expiry::At(positive_ms(n, true, cmd)?),
                Unit::PxAt => Expiry::At(positive_ms(n, false, cmd)?),
            }
        }
        _ if keep => Expiry::Keep,
        _ if persist => Expiry::Persist,
        _ => Expiry::Default,
    };
    Ok(ExtArgs { cond, get, expiry })
}

/// SCAN/DM.SCAN options after the cursor: `MATCH`, `COUNT`, and `TYPE` when allowed.
fn parse_scan_opts(
    args: &[Bytes],
    allow_type: bool,
) -> Result<(Option<Bytes>, usize, Option<Bytes>), CommandError> {
    let mut pattern = None;
    let mut count = 10usize;
    let mut type_filter = None;
    let mut i = 0;
    while i < args.len() {
        let remaining = args.len() - i;
        if eq(&args[i], "count") && remaining >= 2 {
            let n = arg_i64(&args[i + 1])?;
            if n < 1 {
                return Err(CommandError::Syntax);
            }
            count = usize::try_from(n).unwrap_or(usize::MAX);
        } else if eq(&args[i], "match") && remaining >= 2 {
            pattern = Some(args[i + 1].clone());
        } else if allow_type && eq(&args[i], "type") && remaining >= 2 {
            type_filter = Some(args[i + 1].clone());
        } else {
            return Err(CommandError::Syntax);
        }
        i += 2;
    }
    Ok((pattern, count, type_filter))
}

fn parse_cursor(arg: &[u8]) -> Result<u64, CommandError> {
    // Redis's string2ull: plain decimal digits.
    if arg.is_empty() || arg.len() > 20 || !arg.iter().all(u8::is_ascii_digit) {
        return Err(CommandError::InvalidCursor);
    }
    let v: u64 = std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(CommandError::InvalidCursor)?;
    if v >= SCAN_CURSOR_LIMIT {
        return Err(CommandError::InvalidCursor);
    }
    Ok(v)
}

/// A non-negative integer argument for DM commands (TTLs, leases, counts).
fn arg_u64(arg: &[u8]) -> Result<u64, CommandError> {
    u64::try_from(arg_i64(arg)?).map_err(|_| CommandError::NotInteger)
}

/// DM.LOCK's deadline: seconds as a non-negative float (Olric takes a float64).
fn arg_seconds_ms(arg: &[u8]) -> Result<u64, CommandError> {
    let v = parse_f64(arg).ok_or(CommandError::NotFloat)?;
    if !(0.0..=1e12).contains(&v) {
        return Err(CommandError::Other(
            "deadline must be between 0 and 1e12 seconds".to_owned(),
        ));
    }
    Ok((v * 1000.0).round() as u64)
}

/// DM.LOCK's options after the deadline: `EX s` or `PX ms`.
fn parse_lease(args: &[Bytes]) -> Result<Option<u64>, CommandError> {
    match args {
        [] => Ok(None),
        [opt, v] if eq(opt, "ex") => {
            let s = arg_u64(v)?;
            s.checked_mul(1000)
                .filter(|&ms| ms > 0)
                .map(Some)
                .ok_or_else(|| CommandError::InvalidExpireTime("dm.lock".to_owned()))
        }
        [opt, v] if eq(opt, "px") => {
            let ms = arg_u64(v)?;
            if ms == 0 {
                return Err(CommandError::InvalidExpireTime("dm.lock".to_owned()));
            }
            Ok(Some(ms))
        }
        _ => Err(CommandError::Syntax),
    }
}

fn parse_map_option(name: &[u8], value: &[u8]) -> Result<MapOption, CommandError> {
    let n = lower(name);
    Ok(match n.as_str() {
        "ttl" => MapOption::TtlMs(arg_u64(value)?),
        "max_idle" | "maxidle" => MapOption::MaxIdleMs(arg_u64(value)?),
        "max_keys" | "maxkeys" => MapOption::MaxKeys(arg_u64(value)?),
        "max_bytes" | "maxbytes" => MapOption::MaxBytes(arg_u64(value)?),
        "lru_samples" | "lrusamples" => {
            let v = arg_u64(value)?;
            if v > 64 {
                return Err(CommandError::Other(
                    "lru_samples must be in 0..=64".to_owned(),
                ));
            }
            MapOption::LruSamples(v as usize)
        }
        "eviction" => MapOption::Eviction(
            EvictionPolicy::parse(&String::from_utf8_lossy(value)).ok_or_else(|| {
                CommandError::Other(format!(
                    "unknown eviction policy '{}'",
                    String::from_utf8_lossy(value)
                ))
            })?,
        ),
        _ => {
            return Err(CommandError::Other(format!(
                "unknown DM.CONFIG option '{}'",
                String::from_utf8_lossy(name)
            )))
        }
    })
}

impl Command {
    /// `args[0]` is the command name in any case, the rest its arguments (RESP bulk strings).
    /// Wrong arity -> `CommandError::WrongArity(lowercase name)`; bad options -> Redis's error.
    /// Unknown name -> `CommandError::UnknownCommand(..)`.
    pub fn parse(args: &[Bytes]) -> Result<Command, CommandError> {
        let Some(first) = args.first() else {
            return Err(CommandError::UnknownCommand(String::new(), String::new()));
        };
        if first.len() > 32 {
            return Err(unknown_command(args));
        }
        let name = lower(first);
        let a = |i: usize| args[i].clone();
        let keys_from = |i: usize| args[i..].to_vec();
        Ok(match name.as_str() {
            "get" => {
                arity(args, 2, &name)?;
                Command::Get { key: a(1) }
            }
            "set" => {
                arity(args, -3, &name)?;
                let ext = parse_ext(&args[3..], ExtMode::Set, "set")?;
                Command::Set {
                    key: a(1),
                    value: a(2),
                    cond: ext.cond,
                    get: ext.get,
                    expiry: ext.expiry,
                    kind: SetKind::Set,
                }
            }
            "setnx" => {
                arity(args, 3, &name)?;
                Command::Set {
                    key: a(1),
                    value: a(2),
                    cond: Cond::Nx,
                    get: false,
                    expiry: Expiry::Default,
                    kind: SetKind::SetNx,
                }
            }
            "setex" | "psetex" => {
                arity(args, 4, &name)?;
                let n = arg_i64(&args[2])?;
                let kind = if name == "setex" {
                    SetKind::SetEx
                } else {
                    SetKind::PSetEx
                };
                Command::Set {
                    key: a(1),
                    value: a(3),
                    cond: Cond::Always,
                    get: false,
                    expiry: Expiry::In(positive_ms(n, kind == SetKind::SetEx, &name)?),
                    kind,
                }
            }
            "getset" => {
                arity(args, 3, &name)?;
                Command::Set {
                    key: a(1),
                    value: a(2),
                    cond: Cond::Always,
                    get: true,
                    expiry: Expiry::Default,
                    kind: SetKind::GetSet,
                }
            }
            "getdel" => {
                arity(args, 2, &name)?;
                Command::GetDel { key: a(1) }
            }
            "getex" => {
                arity(args, -2, &name)?;
                let ext = parse_ext(&args[2..], ExtMode::GetEx, "getex")?;
                Command::GetEx {
                    key: a(1),
                    expiry: ext.expiry,
                }
            }
            "mget" => {
                arity(args, -2, &name)?;
                Command::MGet { keys: keys_from(1) }
            }
            "mset" | "msetnx" => {
                arity(args, -3, &name)?;
                if args.len() % 2 == 0 {
                    return Err(CommandError::WrongArity(name));
                }
                Command::MSet {
                    pairs: args[1..]
                        .chunks_exact(2)
                        .map(|p| (p[0].clone(), p[1].clone()))
                        .collect(),
                    nx: name == "msetnx",
                }
            }
            "append" => {
                arity(args, 3, &name)?;
                Command::Append {
                    key: a(1),
                    value: a(2),
                }
            }
            "strlen" => {
                arity(args, 2, &name)?;
                Command::StrLen { key: a(1) }
            }
            "getrange" | "substr" => {
                arity(args, 4, &name)?;
                Command::GetRange {
                    key: a(1),
                    start: arg_i64(&args[2])?,
                    end: arg_i64(&args[3])?,
                }
            }
            "setrange" => {
                arity(args, 4, &name)?;
                let offset = arg_i64(&args[2])?;
                if offset < 0 {
                    return Err(CommandError::OffsetOutOfRange);
                }
                Command::SetRange {
                    key: a(1),
                    offset: offset as u64,
                    value: a(3),
                }
            }
            "incr" | "decr" => {
                arity(args, 2, &name)?;
                Command::IncrBy {
                    key: a(1),
                    delta: if name == "incr" { 1 } else { -1 },
                }
            }
            "incrby" => {
                arity(args, 3, &name)?;
                Command::IncrBy {
                    key: a(1),
                    delta: arg_i64(&args[2])?,
                }
            }
            "decrby" => {
                arity(args, 3, &name)?;
                let d = arg_i64(&args[2])?;
                if d == i64::MIN {
                    return Err(CommandError::Other("decrement would overflow".to_owned()));
                }
                Command::IncrBy {
                    key: a(1),
                    delta: -d,
                }
            }
            "incrbyfloat" => {
                arity(args, 3, &name)?;
                if parse_f64(&args[2]).is_none() {
                    return Err(CommandError::NotFloat);
                }
                Command::IncrByFloat {
                    key: a(1),
                    delta: a(2),
                }
            }
            "del" | "unlink" => {
                arity(args, -2, &name)?;
                Command::Del { keys: keys_from(1) }
            }
            "exists" => {
                arity(args, -2, &name)?;
                Command::Exists { keys: keys_from(1) }
            }
            "touch" => {
                arity(args, -2, &name)?;
                Command::Touch { keys: keys_from(1) }
            }
            "type" => {
                arity(args, 2, &name)?;
                Command::Type { key: a(1) }
            }
            "expire" | "pexpire" | "expireat" | "pexpireat" => {
                arity(args, -3, &name)?;
                let cond = parse_expire_cond(&args[3..])?;
                Command::Expire {
                    key: a(1),
                    when: arg_i64(&args[2])?,
                    millis: name.starts_with('p'),
                    absolute: name.ends_with("at"),
                    cond,
                }
            }
            "ttl" | "pttl" => {
                arity(args, 2, &name)?;
                Command::Ttl {
                    key: a(1),
                    millis: name == "pttl",
                }
            }
            "expiretime" | "pexpiretime" => {
                arity(args, 2, &name)?;
                Command::ExpireTime {
                    key: a(1),
                    millis: name == "pexpiretime",
                }
            }
            "persist" => {
                arity(args, 2, &name)?;
                Command::Persist { key: a(1) }
            }
            "rename" | "renamenx" => {
                arity(args, 3, &name)?;
                Command::Rename {
                    from: a(1),
                    to: a(2),
                    nx: name == "renamenx",
                }
            }
            "memory" => {
                arity(args, -2, &name)?;
                if !eq(&args[1], "usage") {
                    return Err(CommandError::Other(format!(
                        "unknown subcommand '{}'. Try MEMORY HELP.",
                        String::from_utf8_lossy(&args[1])
                            .chars()
                            .take(128)
                            .collect::<String>()
                    )));
                }
                arity(args, -3, "memory|usage")?;
                match &args[3..] {
                    [] => {}
                    [opt, n] if eq(opt, "samples") => {
                        arg_i64(n)?;
                    }
                    _ => return Err(CommandError::Syntax),
                }
                Command::MemoryUsage { key: a(2) }
            }
            "scan" => {
                arity(args, -2, &name)?;
                let cursor = parse_cursor(&args[1])?;
                let (pattern, count, type_filter) = parse_scan_opts(&args[2..], true)?;
                Command::Scan {
                    cursor,
                    pattern,
                    count,
                    type_filter,
                }
            }
            "keys" => {
                arity(args, 2, &name)?;
                Command::Keys { pattern: a(1) }
            }
            "randomkey" => {
                arity(args, 1, &name)?;
                Command::RandomKey
            }
            "dbsize" => {
                arity(args, 1, &name)?;
                Command::DbSize
            }
            "flushall" | "flushdb" => {
                arity(args, -1, &name)?;
                match &args[1..] {
                    [] => {}
                    [m] if eq(m, "async") || eq(m, "sync") => {}
                    _ => return Err(CommandError::Syntax),
                }
                Command::Flush {
                    all: name == "flushall",
                }
            }
            n if n.starts_with("dm.") => return parse_dm(args, n),
            _ => return Err(unknown_command(args)),
        })
    }

    /// For DM.LOCK: how long the caller should keep retrying (ms) when the lock is held.
    pub fn lock_wait_ms(&self) -> Option<u64> {
        match self {
            Command::DmLock { wait_ms, .. } => Some(*wait_ms),
            _ => None,
        }
    }

    /// The keys this command touches, in argument order (for routing and WATCH).
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            Command::Get { key }
            | Command::Set { key, .. }
            | Command::GetDel { key }
            | Command::GetEx { key, .. }
            | Command::Append { key, .. }
            | Command::StrLen { key }
            | Command::GetRange { key, .. }
            | Command::SetRange { key, .. }
            | Command::IncrBy { key, .. }
            | Command::IncrByFloat { key, .. }
            | Command::Type { key }
            | Command::Expire { key, .. }
            | Command::Ttl { key, .. }
            | Command::ExpireTime { key, .. }
            | Command::Persist { key }
            | Command::MemoryUsage { key }
            | Command::DmPut { key, .. }
            | Command::DmGet { key, .. }
            | Command::DmGetEntry { key, .. }
            | Command::DmExpire { key, .. }
            | Command::DmIncr { key, .. }
            | Command::DmIncrByFloat { key, .. }
            | Command::DmGetPut { key, .. }
            | Command::DmCas { key, .. }
            | Command::DmLock { key, .. }
            | Command::DmUnlock { key, .. }
            | Command::DmLockLease { key, .. } => vec![key],
            Command::MGet { keys }
            | Command::Del { keys }
            | Command::Exists { keys }
            | Command::Touch { keys }
            | Command::DmDel { keys, .. } => keys.iter().collect(),
            Command::MSet { pairs, .. } => pairs.iter().map(|(k, _)| k).collect(),
            Command::Rename { from, to, .. } => vec![from, to],
            Command::Scan { .. }
            | Command::Keys { .. }
            | Command::RandomKey
            | Command::DbSize
            | Command::Flush { .. }
            | Command::DmScan { .. }
            | Command::DmDestroy { .. }
            | Command::DmStats { .. }
            | Command::DmConfigSet { .. } => Vec::new(),
        }
    }

    /// The DMap a `DM.*` command names (None for plain Redis commands, which use
    /// `DEFAULT_MAP`, and for `DM.STATS` without a map).
    pub fn dmap(&self) -> Option<&Bytes> {
        match self {
            Command::DmPut { map, .. }
            | Command::DmGet { map, .. }
            | Command::DmGetEntry { map, .. }
            | Command::DmDel { map, .. }
            | Command::DmExpire { map, .. }
            | Command::DmIncr { map, .. }
            | Command::DmIncrByFloat { map, .. }
            | Command::DmGetPut { map, .. }
            | Command::DmCas { map, .. }
            | Command::DmLock { map, .. }
            | Command::DmUnlock { map, .. }
            | Command::DmLockLease { map, .. }
            | Command::DmScan { map, .. }
            | Command::DmDestroy { map }
            | Command::DmConfigSet { map, .. } => Some(map),
            Command::DmStats { map } => map.as_ref(),
            _ => None,
        }
    }

    /// True when the command may modify data (for replication, read-only replicas, WATCH).
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            Command::Get { .. }
                | Command::MGet { .. }
                | Command::StrLen { .. }
                | Command::GetRange { .. }
                | Command::Exists { .. }
                | Command::Type { .. }
                | Command::Ttl { .. }
                | Command::ExpireTime { .. }
                | Command::MemoryUsage { .. }
                | Command::Scan { .. }
                | Command::Keys { .. }
                | Command::RandomKey
                | Command::DbSize
                | Command::DmGet { .. }
                | Command::DmGetEntry { .. }
                | Command::DmScan { .. }
                | Command::DmStats { .. }
        )
    }
}

fn parse_expire_cond(opts: &[Bytes]) -> Result<ExpireCond, CommandError> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for o in opts {
        if eq(o, "nx") {
            nx = true;
        } else if eq(o, "xx") {
            xx = true;
        } else if eq(o, "gt") {
            gt = true;
        } else if eq(o, "lt") {
            lt = true;
        } else {
            return Err(CommandError::Other(format!(
                "Unsupported option {}",
                String::from_utf8_lossy(o)
                    .chars()
                    .take(128)
                    .collect::<String>()
            )));
        }
    }
    if nx && (xx || gt || lt) {
        return Err(CommandError::Other(
            "NX and XX, GT or LT options at the same time are not compatible".to_owned(),
        ));
    }
    if gt && lt {
        return Err(CommandError::Other(
            "GT and LT options at the same time are not compatible".to_owned(),
        ));
    }
    Ok(if nx {
        ExpireCond::Nx
    } else if gt {
        // GT already fails on a key without a TTL, so XX adds nothing to it.
        ExpireCond::Gt
    } else if lt && xx {
        ExpireCond::LtXx
    } else if lt {
        ExpireCond::Lt
    } else if xx {
        ExpireCond::Xx
    } else {
        ExpireCond::Always
    })
}

fn parse_dm(args: &[Bytes], name: &str) -> Result<Command, CommandError> {
    let a = |i: usize| args[i].clone();
    Ok(match name {
        "dm.put" => {
            arity(args, -4, name)?;
            let ext = parse_ext(&args[4..], ExtMode::DmPut, name)?;
            Command::DmPut {
                map: a(1),
                key: a(2),
                value: a(3),
                expiry: ext.expiry,
                cond: ext.cond,
            }
        }
        "dm.get" => {
            arity(args, 3, name)?;
            Command::DmGet {
                map: a(1),
                key: a(2),
            }
        }
        "dm.getentry" => {
            arity(args, 3, name)?;
            Command::DmGetEntry {
                map: a(1),
                key: a(2),
            }
        }
        "dm.del" => {
            arity(args, -3, name)?;
            Command::DmDel {
                map: a(1),
                keys: args[2..].to_vec(),
            }
        }
        "dm.expire" | "dm.pexpire" => {
            arity(args, 4, name)?;
            let v = arg_u64(&args[3])?;
            let ttl_ms = if name == "dm.expire" {
                v.checked_mul(1000)
                    .ok_or_else(|| CommandError::InvalidExpireTime(name.to_owned()))?
            } else {
                v
            };
            if ttl_ms == 0 || ttl_ms > i64::MAX as u64 {
                return Err(CommandError::InvalidExpireTime(name.to_owned()));
            }
            Command::DmExpire {
                map: a(1),
                key: a(2),
                ttl_ms,
            }
        }
        "dm.incr" | "dm.decr" => {
            arity(args, 4, name)?;
            let d = arg_i64(&args[3])?;
            let delta = if name == "dm.incr" {
                d
            } else {
                d.checked_neg()
                    .ok_or_else(|| CommandError::Other("decrement would overflow".to_owned()))?
            };
            Command::DmIncr {
                map: a(1),
                key: a(2),
                delta,
            }
        }
        "dm.incrbyfloat" => {
            arity(args, 4, name)?;
            if parse_f64(&args[3]).is_none() {
                return Err(CommandError::NotFloat);
            }
            Command::DmIncrByFloat {
                map: a(1),
                key: a(2),
                delta: a(3),
            }
        }
        "dm.getput" => {
            arity(args, -4, name)?;
            let ext = parse_ext(&args[4..], ExtMode::GetEx, name)?;
            if ext.expiry == Expiry::Persist {
                return Err(CommandError::Syntax);
            }
            Command::DmGetPut {
                map: a(1),
                key: a(2),
                value: a(3),
                expiry: ext.expiry,
            }
        }
        "dm.cas" => {
            arity(args, -5, name)?;
            let ext = parse_ext(&args[5..], ExtMode::GetEx, name)?;
            if ext.expiry == Expiry::Persist {
                return Err(CommandError::Syntax);
            }
            Command::DmCas {
                map: a(1),
                key: a(2),
                expected: a(3),
                new: a(4),
                expiry: ext.expiry,
            }
        }
        "dm.lock" => {
            arity(args, -4, name)?;
            Command::DmLock {
                map: a(1),
                key: a(2),
                wait_ms: arg_seconds_ms(&args[3])?,
                lease_ms: parse_lease(&args[4..])?,
            }
        }
        "dm.unlock" => {
            arity(args, 4, name)?;
            Command::DmUnlock {
                map: a(1),
                key: a(2),
                token: a(3),
            }
        }
        "dm.locklease" | "dm.plocklease" => {
            arity(args, 5, name)?;
            let v = arg_u64(&args[4])?;
            let lease_ms = if name == "dm.locklease" {
                v.checked_mul(1000)
                    .ok_or_else(|| CommandError::InvalidExpireTime(name.to_owned()))?
            } else {
                v
            };
            if lease_ms == 0 || lease_ms > i64::MAX as u64 {
                return Err(CommandError::InvalidExpireTime(name.to_owned()));
            }
            Command::DmLockLease {
                map: a(1),
                key: a(2),
                token: a(3),
                lease_ms,
            }
        }
        "dm.scan" => {
            arity(args, -3, name)?;
            let cursor = parse_cursor(&args[2])?;
            let (pattern, count, _) = parse_scan_opts(&args[3..], false)?;
            Command::DmScan {
                map: a(1),
                cursor,
                pattern,
                count,
            }
        }
        "dm.destroy" => {
            arity(args, 2, name)?;
            Command::DmDestroy { map: a(1) }
        }
        "dm.stats" => {
            if args.len() > 2 {
                return Err(CommandError::WrongArity(name.to_owned()));
            }
            Command::DmStats {
                map: args.get(1).cloned(),
            }
        }
        "dm.config" => {
            arity(args, -2, name)?;
            if !eq(&args[1], "set") {
                return Err(CommandError::Other(format!(
                    "unknown subcommand '{}'. Try DM.CONFIG SET.",
                    String::from_utf8_lossy(&args[1])
                        .chars()
                        .take(128)
                        .collect::<String>()
                )));
            }
            arity(args, 5, "dm.config|set")?;
            Command::DmConfigSet {
                map: a(2),
                option: parse_map_option(&args[3], &args[4])?,
            }
        }
        _ => return Err(unknown_command(args)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Command, CommandError> {
        let args: Vec<Bytes> = line
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect();
        Command::parse(&args)
    }

    fn err(line: &str) -> String {
        p(line).unwrap_err().to_string()
    }

    #[test]
    fn arity_and_unknown() {
        assert_eq!(
            err("GET"),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            err("get a b"),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            err("MSET a"),
            "ERR wrong number of arguments for 'mset' command"
        );
        assert_eq!(
            err("MSET a b c"),
            "ERR wrong number of arguments for 'mset' command"
        );
        assert_eq!(
            err("Foo a b"),
            "ERR unknown command 'Foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            err("foo"),
            "ERR unknown command 'foo', with args beginning with: "
        );
        assert_eq!(
            err("memory usage"),
            "ERR wrong number of arguments for 'memory|usage' command"
        );
        assert!(Command::parse(&[]).is_err());
    }

    #[test]
    fn set_options() {
        assert_eq!(
            p("set k v nx ex 10").unwrap(),
            Command::Set {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                cond: Cond::Nx,
                get: false,
                expiry: Expiry::In(10_000),
                kind: SetKind::Set,
            }
        );
        assert!(matches!(
            p("SET k v PXAT 5 GET").unwrap(),
            Command::Set {
                expiry: Expiry::At(5),
                get: true,
                ..
            }
        ));
        assert!(matches!(
            p("set k v keepttl").unwrap(),
            Command::Set {
                expiry: Expiry::Keep,
                ..
            }
        ));
        assert!(matches!(
            p("set k v ex 1 ex 2").unwrap(),
            Command::Set {
                expiry: Expiry::In(2000),
                ..
            }
        ));
        for bad in [
            "set k v nx xx",
            "set k v xx nx",
            "set k v ex",
            "set k v ex 10 px 10",
            "set k v keepttl ex 10",
            "set k v ex 10 keepttl",
            "set k v persist",
            "set k v foo",
        ] {
            assert_eq!(err(bad), "ERR syntax error", "{bad}");
        }
        assert_eq!(
            err("set k v ex 0"),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            err("set k v px -1"),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            err("set k v ex 9223372036854775807"),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            err("set k v ex abc"),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            err("setex k 0 v"),
            "ERR invalid expire time in 'setex' command"
        );
        assert_eq!(
            err("psetex k -5 v"),
            "ERR invalid expire time in 'psetex' command"
        );
        assert_eq!(
            err("getex k ex 0"),
            "ERR invalid expire time in 'getex' command"
        );
        assert_eq!(err("getex k nx"), "ERR syntax error");
        assert_eq!(err("getex k persist ex 1"), "ERR syntax error");
        assert!(matches!(
            p("getex k persist").unwrap(),
            Command::GetEx {
                expiry: Expiry::Persist,
                ..
            }
        ));
    }

    #[test]
    fn expire_options() {
        assert_eq!(
            err("expire k 10 nx xx"),
            "ERR NX and XX, GT or LT options at the same time are not compatible"
        );
        assert_eq!(
            err("expire k 10 gt lt"),
            "ERR GT and LT options at the same time are not compatible"
        );
        assert_eq!(err("expire k 10 foo"), "ERR Unsupported option foo");
        assert_eq!(
            err("expire k x"),
            "ERR value is not an integer or out of range"
        );
        assert!(matches!(
            p("pexpireat k -5 gt").unwrap(),
            Command::Expire {
                when: -5,
                millis: true,
                absolute: true,
                cond: ExpireCond::Gt,
                ..
            }
        ));
    }

    #[test]
    fn numbers_and_ranges() {
        assert_eq!(
            err("incrby k 1.5"),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            err("decrby k -9223372036854775808"),
            "ERR decrement would overflow"
        );
        assert_eq!(err("incrbyfloat k abc"), "ERR value is not a valid float");
        assert_eq!(err("setrange k -1 v"), "ERR offset is out of range");
        assert_eq!(
            err("getrange k a 1"),
            "ERR value is not an integer or out of range"
        );
    }

    #[test]
    fn scan_options() {
        assert!(matches!(
            p("scan 0 match a* count 5 type string").unwrap(),
            Command::Scan {
                cursor: 0,
                count: 5,
                ..
            }
        ));
        assert_eq!(err("scan x"), "ERR invalid cursor");
        assert_eq!(err("scan -1"), "ERR invalid cursor");
        assert_eq!(err("scan 72057594037927936"), "ERR invalid cursor");
        assert_eq!(err("scan 0 count 0"), "ERR syntax error");
        assert_eq!(err("scan 0 count"), "ERR syntax error");
        assert_eq!(err("scan 0 foo bar"), "ERR syntax error");
        assert_eq!(err("dm.scan m 0 type string"), "ERR syntax error");
        assert_eq!(err("flushall bogus"), "ERR syntax error");
    }

    #[test]
    fn dm_commands() {
        assert!(matches!(
            p("DM.PUT m k v EX 10 NX").unwrap(),
            Command::DmPut {
                expiry: Expiry::In(10_000),
                cond: Cond::Nx,
                ..
            }
        ));
        // Olric panicked on these; here they are errors.
        assert_eq!(err("DM.PUT d k v EX"), "ERR syntax error");
        assert_eq!(err("DM.LOCK d k 1 EX"), "ERR syntax error");
        assert_eq!(err("DM.SCAN d 0 BOGUS"), "ERR syntax error");
        assert_eq!(err("DM.PUT d k v GET"), "ERR syntax error");
        let lock = p("DM.LOCK d k 2.5 PX 100").unwrap();
        assert_eq!(lock.lock_wait_ms(), Some(2500));
        assert!(matches!(
            lock,
            Command::DmLock {
                lease_ms: Some(100),
                ..
            }
        ));
        assert_eq!(
            err("DM.EXPIRE d k 0"),
            "ERR invalid expire time in 'dm.expire' command"
        );
        assert_eq!(
            err("DM.INCR d k x"),
            "ERR value is not an integer or out of range"
        );
        assert!(matches!(
            p("DM.DECR d k 5").unwrap(),
            Command::DmIncr { delta: -5, .. }
        ));
        assert!(matches!(
            p("DM.CONFIG SET d max_keys 10").unwrap(),
            Command::DmConfigSet {
                option: MapOption::MaxKeys(10),
                ..
            }
        ));
        assert!(p("DM.CONFIG SET d bogus 10").is_err());
        assert!(p("DM.CONFIG SET d eviction nope").is_err());
        assert!(matches!(
            p("DM.STATS").unwrap(),
            Command::DmStats { map: None }
        ));
        assert_eq!(
            err("DM.STATS a b"),
            "ERR wrong number of arguments for 'dm.stats' command"
        );
        assert!(p("dm.bogus x").is_err());
    }
}
