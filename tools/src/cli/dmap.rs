//! Olric-style verbs on a selected DMap: after `use users`, `put k v` means
//! `DM.PUT users k v`, `get k` means `DM.GET users k`, and so on (see [`translate`]). Any other
//! command is sent unchanged.

/// What a line means once a DMap is selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// Send this command.
    Command(Vec<Vec<u8>>),
    /// Walk the whole map with `DM.SCAN`, optionally matching a glob.
    Scan(Option<Vec<u8>>),
    /// The verb was used wrongly; the text is its usage.
    Usage(&'static str),
}

/// The verbs understood on a selected map, with their usage (shown by `help`).
pub const VERBS: &[(&str, &str)] = &[
    (
        "put",
        "put key value [EX s|PX ms|EXAT ts|PXAT ms-ts] [NX|XX]",
    ),
    ("get", "get key"),
    ("getentry", "getentry key"),
    ("getput", "getput key value"),
    ("del", "del key [key ...]"),
    ("incr", "incr key [delta]"),
    ("decr", "decr key [delta]"),
    ("expire", "expire key seconds"),
    ("pexpire", "pexpire key milliseconds"),
    ("scan", "scan [glob]"),
    ("destroy", "destroy"),
    ("stats", "stats"),
];

/// Translates `args` (a typed line, split) for map `dmap`. `None` means "not a map verb: send
/// the line as typed".
pub fn translate(dmap: &str, args: &[Vec<u8>]) -> Option<Verb> {
    let (verb, rest) = args.split_first()?;
    let verb = String::from_utf8_lossy(verb).to_ascii_lowercase();
    let (name, usage) = *VERBS.iter().find(|(v, _)| *v == verb)?;
    let cmd = |dm: &str, extra: &[Vec<u8>]| {
        let mut c = vec![dm.as_bytes().to_vec(), dmap.as_bytes().to_vec()];
        c.extend_from_slice(extra);
        Verb::Command(c)
    };
    let n = rest.len();
    Some(match name {
        "put" if n >= 2 => cmd("DM.PUT", rest),
        "get" if n == 1 => cmd("DM.GET", rest),
        "getentry" if n == 1 => cmd("DM.GETENTRY", rest),
        "getput" if n == 2 => cmd("DM.GETPUT", rest),
        "del" if n >= 1 => cmd("DM.DEL", rest),
        "incr" | "decr" if n == 1 || n == 2 => {
            let mut extra = rest.to_vec();
            if n == 1 {
                extra.push(b"1".to_vec());
            }
            cmd(if name == "incr" { "DM.INCR" } else { "DM.DECR" }, &extra)
        }
        "expire" if n == 2 => cmd("DM.EXPIRE", rest),
        "pexpire" if n == 2 => cmd("DM.PEXPIRE", rest),
        "scan" if n <= 1 => Verb::Scan(rest.first().cloned()),
        "destroy" if n == 0 => cmd("DM.DESTROY", rest),
        "stats" if n == 0 => cmd("DM.STATS", rest),
        _ => Verb::Usage(usage),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(parts: &[&str]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    fn t(parts: &[&str]) -> Option<Verb> {
        translate("users", &a(parts))
    }

    #[test]
    fn verbs_become_dm_commands_on_the_map() {
        assert_eq!(
            t(&["put", "k", "v"]),
            Some(Verb::Command(a(&["DM.PUT", "users", "k", "v"])))
        );
        assert_eq!(
            t(&["PUT", "k", "v", "EX", "10", "NX"]),
            Some(Verb::Command(a(&[
                "DM.PUT", "users", "k", "v", "EX", "10", "NX"
            ])))
        );
        assert_eq!(
            t(&["Get", "k"]),
            Some(Verb::Command(a(&["DM.GET", "users", "k"])))
        );
        assert_eq!(
            t(&["del", "a", "b"]),
            Some(Verb::Command(a(&["DM.DEL", "users", "a", "b"])))
        );
        assert_eq!(
            t(&["incr", "n"]),
            Some(Verb::Command(a(&["DM.INCR", "users", "n", "1"])))
        );
        assert_eq!(
            t(&["decr", "n", "5"]),
            Some(Verb::Command(a(&["DM.DECR", "users", "n", "5"])))
        );
        assert_eq!(
            t(&["expire", "k", "3"]),
            Some(Verb::Command(a(&["DM.EXPIRE", "users", "k", "3"])))
        );
        assert_eq!(
            t(&["destroy"]),
            Some(Verb::Command(a(&["DM.DESTROY", "users"])))
        );
        assert_eq!(
            t(&["stats"]),
            Some(Verb::Command(a(&["DM.STATS", "users"])))
        );
        assert_eq!(t(&["scan"]), Some(Verb::Scan(None)));
        assert_eq!(t(&["scan", "u*"]), Some(Verb::Scan(Some(b"u*".to_vec()))));
    }

    #[test]
    fn wrong_arity_gives_usage() {
        assert_eq!(t(&["get"]), Some(Verb::Usage("get key")));
        assert_eq!(t(&["put", "k"]), Some(Verb::Usage(VERBS[0].1)));
        assert_eq!(
            t(&["incr", "a", "1", "2"]),
            Some(Verb::Usage("incr key [delta]"))
        );
        assert_eq!(t(&["scan", "a", "b"]), Some(Verb::Usage("scan [glob]")));
    }

    #[test]
    fn other_commands_pass_through() {
        assert_eq!(t(&["PING"]), None);
        assert_eq!(t(&["DM.GET", "other", "k"]), None);
        assert_eq!(t(&[]), None);
    }
}
