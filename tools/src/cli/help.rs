//! The REPL's `help`: the general text, a map verb's usage, or a server command's syntax and
//! summary rendered from its `COMMAND DOCS` reply (RESP2 flat arrays and RESP3 maps alike).

use super::dmap;
use super::resp::Reply;
use std::fmt::Write as _;

/// The `help` text; with a map selected it also names the map.
pub fn general(dmap: Option<&str>) -> String {
    let mut s = String::from(
        "Type a command as you would in redis-cli, e.g. SET k v, DM.GET users alice.\n\
         Quote arguments with spaces: SET k \"a b\"; \\n, \\t and \\xHH work inside \"...\".\n\
         \n\
         Built-ins:\n  \
           help <command>  syntax and summary of a command\n  \
           use <dmap>      act on a DMap with put/get/del/... (Olric style)\n  \
           use             leave the DMap, back to plain commands\n  \
           clear           clear the screen\n  \
           quit, exit      leave (Ctrl-D too)\n\
         \n\
         Tab completes command names; Up/Down walk the history.\n",
    );
    s.push_str("\nDMap verbs (after `use <dmap>`):\n");
    for (_, usage) in dmap::VERBS {
        let _ = writeln!(s, "  {usage}");
    }
    if let Some(m) = dmap {
        let _ = write!(s, "\nCurrent DMap: {m}\n");
    }
    s
}

/// Key/value pairs of a RESP3 map or a RESP2 flat `[k, v, k, v]` array.
fn pairs(r: &Reply) -> Vec<(String, &Reply)> {
    match r {
        Reply::Map(p) => p
            .iter()
            .filter_map(|(k, v)| Some((k.as_text()?, v)))
            .collect(),
        Reply::Array(items) => items
            .chunks_exact(2)
            .filter_map(|c| Some((c[0].as_text()?, &c[1])))
            .collect(),
        _ => Vec::new(),
    }
}

fn field<'a>(r: &'a Reply, name: &str) -> Option<&'a Reply> {
    pairs(r)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn text_field(r: &Reply, name: &str) -> Option<String> {
    field(r, name).and_then(Reply::as_text)
}

fn list(r: Option<&Reply>) -> &[Reply] {
    match r {
        Some(Reply::Array(items) | Reply::Set(items)) => items,
        _ => &[],
    }
}

/// One argument's syntax, as in the Redis docs: `key`, `[NX | XX]`, `EX seconds`,
/// `key [key ...]`.
fn argument(arg: &Reply) -> String {
    let name = text_field(arg, "name").unwrap_or_default();
    let kind = text_field(arg, "type").unwrap_or_default();
    let token = text_field(arg, "token");
    let flags: Vec<String> = list(field(arg, "flags"))
        .iter()
        .filter_map(Reply::as_text)
        .collect();
    let children: Vec<String> = list(field(arg, "arguments")).iter().map(argument).collect();
    let optional = flags.iter().any(|f| f == "optional");
    let mut base = match kind.as_str() {
        "pure-token" => token.clone().unwrap_or(name),
        "oneof" => children.join(" | "),
        "block" => children.join(" "),
        _ => name,
    };
    if kind == "oneof" && !optional {
        base = format!("<{base}>");
    }
    if let (Some(t), false) = (&token, kind == "pure-token") {
        base = format!("{t} {base}");
    }
    if flags
        .iter()
        .any(|f| f == "multiple" || f == "multiple_token")
    {
        base = format!("{base} [{base} ...]");
    }
    if optional {
        base = format!("[{base}]");
    }
    base
}

/// Help for `name` from a `COMMAND DOCS name` reply: syntax, summary, since, group. `None` when
/// the server has no docs for it.
pub fn command(name: &str, docs_reply: &Reply) -> Option<String> {
    let (_, docs) = pairs(docs_reply).into_iter().next()?;
    let args: Vec<String> = list(field(docs, "arguments"))
        .iter()
        .map(argument)
        .collect();
    let mut s = format!("\n  {}", name.to_ascii_uppercase());
    for a in &args {
        s.push(' ');
        s.push_str(a);
    }
    s.push('\n');
    for (label, key) in [
        ("summary", "summary"),
        ("since", "since"),
        ("group", "group"),
    ] {
        if let Some(v) = text_field(docs, key) {
            let _ = writeln!(s, "  {label}: {v}");
        }
    }
    s.push('\n');
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    /// A RESP2-shaped argument description.
    fn arg(fields: &[(&str, Reply)]) -> Reply {
        Reply::Array(fields.iter().flat_map(|(k, v)| [b(k), v.clone()]).collect())
    }

    fn flags(f: &[&str]) -> Reply {
        Reply::Array(
            f.iter()
                .map(|x| Reply::Simple(x.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn renders_syntax_like_the_redis_docs() {
        let key = arg(&[("name", b("key")), ("type", b("key"))]);
        let cond = arg(&[
            ("name", b("condition")),
            ("type", b("oneof")),
            ("flags", flags(&["optional"])),
            (
                "arguments",
                Reply::Array(vec![
                    arg(&[
                        ("name", b("nx")),
                        ("type", b("pure-token")),
                        ("token", b("NX")),
                    ]),
                    arg(&[
                        ("name", b("xx")),
                        ("type", b("pure-token")),
                        ("token", b("XX")),
                    ]),
                ]),
            ),
        ]);
        let ex = arg(&[
            ("name", b("seconds")),
            ("type", b("integer")),
            ("token", b("EX")),
            ("flags", flags(&["optional"])),
        ]);
        let keys = arg(&[
            ("name", b("key")),
            ("type", b("key")),
            ("flags", flags(&["multiple"])),
        ]);
        let docs = Reply::Array(vec![
            b("summary"),
            b("Does things"),
            b("since"),
            b("1.0.0"),
            b("group"),
            b("string"),
            b("arguments"),
            Reply::Array(vec![key, cond, ex, keys]),
        ]);
        let reply = Reply::Array(vec![b("set"), docs.clone()]);
        assert_eq!(
            command("set", &reply).unwrap(),
            "\n  SET key [NX | XX] [EX seconds] key [key ...]\n  summary: Does things\n  \
             since: 1.0.0\n  group: string\n\n"
        );
        // RESP3 shape: maps instead of flat arrays.
        let resp3 = Reply::Map(vec![(b("set"), docs)]);
        assert_eq!(command("set", &resp3), command("set", &reply));
        assert_eq!(command("nope", &Reply::Array(vec![])), None);
        assert_eq!(command("nope", &Reply::Map(vec![])), None);
    }

    #[test]
    fn general_help_lists_builtins_and_verbs() {
        let h = general(Some("users"));
        assert!(h.contains("use <dmap>"));
        assert!(h.contains("put key value"));
        assert!(h.ends_with("Current DMap: users\n"));
        assert!(!general(None).contains("Current DMap"));
    }
}
