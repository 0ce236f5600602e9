//! `tessera`: the command-line client. With no command it opens a REPL; `-c "CMD ..."` or
//! trailing arguments run one command; lines on a non-terminal stdin run as a script;
//! `tessera stats` shows node, core and map figures. Works against Tessera and Redis alike.
//!
//! Exit status: 0 when every command got a non-error reply; 1 after any error reply, client-side
//! error (bad quoting, wrong verb usage) or connection failure; 2 for bad command-line usage.

#[path = "../cli/mod.rs"]
mod cli;

use clap::{ArgAction, Args, Parser, Subcommand};
use cli::conn::ConnOpts;
use cli::resp::ReplyLimits;
use cli::session::{Flow, Session, Style};
use std::io::{BufRead, IsTerminal, Write as _};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "Tessera command-line client (REPL, one-shot commands, stats); works with Redis too",
    disable_help_flag = true,
    disable_help_subcommand = true,
    after_help = "Examples:\n  \
        tessera                          REPL to 127.0.0.1:6379 (type `help` inside)\n  \
        tessera -p 7000 GET foo          one command, the rest of the line is its arguments\n  \
        tessera -c 'DM.GET users alice'  one command line, quoted as in the REPL\n  \
        tessera < script.txt             one command per line; exit 1 if any failed\n  \
        tessera stats --watch            node and per-core figures, refreshed like top\n  \
        tessera stats --dmap users --json\n  \
        tessera cluster status           members, epoch, slot ranges per (node, core)"
)]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    /// Run this command line (quoted like in the REPL) and exit.
    #[arg(short = 'c', long = "command", value_name = "LINE")]
    command: Option<String>,
    /// Print replies raw (bare values, for scripts); the default when stdout is not a terminal.
    #[arg(long, conflicts_with = "no_raw")]
    raw: bool,
    /// Print replies in the human form even when stdout is not a terminal.
    #[arg(long)]
    no_raw: bool,
    #[command(subcommand)]
    sub: Option<Sub>,
}

#[derive(Debug, Args)]
struct ConnArgs {
    /// Server host.
    #[arg(short = 'h', long, default_value = "127.0.0.1", global = true)]
    host: String,
    /// Server port.
    #[arg(short = 'p', long, default_value_t = 6379, global = true)]
    port: u16,
    /// Password (AUTH); also read from TESSERA_AUTH so it stays out of `ps`.
    #[arg(
        short = 'a',
        long,
        env = "TESSERA_AUTH",
        hide_env_values = true,
        global = true
    )]
    password: Option<String>,
    /// User name for ACL authentication.
    #[arg(long, global = true)]
    user: Option<String>,
    /// Speak RESP3 (HELLO 3).
    #[arg(long, global = true)]
    resp3: bool,
    /// Seconds to wait for the TCP connection.
    #[arg(long, default_value_t = 5.0, value_name = "SECS", global = true)]
    connect_timeout: f64,
    /// Seconds to wait for a reply (default: forever, as blocking commands need; 10 for stats).
    #[arg(long, value_name = "SECS", global = true)]
    timeout: Option<f64>,
    /// Print help.
    #[arg(long, action = ArgAction::Help, global = true)]
    help: Option<bool>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Per-node and per-core figures from INFO, or a map's from DM.STATS.
    #[command(disable_help_flag = true)]
    Stats(StatsArgs),
    /// `cluster status`: members, coordinator, epoch and slot ranges per (node, core); any
    /// other `cluster ...` is sent to the server as a command.
    #[command(disable_help_flag = true)]
    Cluster(ClusterArgs),
    /// Any other word starts a command sent to the server, e.g. `tessera GET foo`.
    #[command(external_subcommand)]
    Command(Vec<String>),
}

#[derive(Debug, Args)]
struct StatsArgs {
    /// Show this DMap's figures (DM.STATS) instead; without NAME, every map's.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    dmap: Option<String>,
    /// Print JSON, one document per refresh.
    #[arg(long)]
    json: bool,
    /// Refresh every SECS seconds (at least 0.1), like top (default 2).
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    watch: Option<f64>,
    /// Stop after N refreshes in watch mode.
    #[arg(long, value_name = "N")]
    iterations: Option<u64>,
    /// Seconds between the two INFO samples that give ops/s.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    interval: f64,
    /// Also ask this node (host:port); repeatable.
    #[arg(long = "node", value_name = "HOST:PORT")]
    nodes: Vec<String>,
}

#[derive(Debug, Args)]
struct ClusterArgs {
    #[command(subcommand)]
    sub: ClusterSub,
}

#[derive(Debug, Subcommand)]
enum ClusterSub {
    /// Members, coordinator, table epoch and slot ranges per (node, core).
    #[command(disable_help_flag = true)]
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Any other word: `tessera cluster info` sends `CLUSTER INFO`.
    #[command(external_subcommand)]
    Other(Vec<String>),
}

/// How long `tessera stats` waits for a reply when `--timeout` is not given.
const STATS_TIMEOUT: Duration = Duration::from_secs(10);

fn secs(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("--{name} must be a non-negative number of seconds, not {v}"))
}

fn conn_opts(a: &ConnArgs) -> anyhow::Result<ConnOpts> {
    let read_timeout = match a.timeout {
        Some(t) if t > 0.0 => Some(secs("timeout", t)?),
        _ => None,
    };
    Ok(ConnOpts {
        host: a.host.clone(),
        port: a.port,
        password: a.password.clone(),
        user: a.user.clone(),
        resp3: a.resp3,
        connect_timeout: secs("connect-timeout", a.connect_timeout)?.max(Duration::from_millis(1)),
        read_timeout,
        limits: ReplyLimits::default(),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tessera: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut cli: Cli) -> anyhow::Result<ExitCode> {
    let opts = conn_opts(&cli.conn)?;
    if let Some(Sub::Cluster(ClusterArgs {
        sub: ClusterSub::Other(words),
    })) = &mut cli.sub
    {
        let words = std::iter::once("cluster".to_owned())
            .chain(std::mem::take(words))
            .collect();
        cli.sub = Some(Sub::Command(words));
    }
    let stdout_tty = std::io::stdout().is_terminal();
    match cli.sub {
        Some(Sub::Stats(s)) => {
            let mut opts = opts;
            // INFO never blocks, so stats waits a bounded time for it unless told otherwise.
            if cli.conn.timeout.is_none() {
                opts.read_timeout = Some(STATS_TIMEOUT);
            }
            let mut nodes = vec![opts.clone()];
            for n in &s.nodes {
                let (host, port) = n
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse().ok()?)))
                    .ok_or_else(|| anyhow::anyhow!("--node wants host:port, not {n:?}"))?;
                nodes.push(ConnOpts {
                    host: host.to_string(),
                    port,
                    ..opts.clone()
                });
            }
            let stats = cli::stats::StatsOpts {
                nodes,
                dmap: s.dmap,
                json: s.json,
                // At most ten refreshes a second, so `--watch 0` cannot hammer the server.
                watch: s
                    .watch
                    .map(|w| secs("watch", w).map(|d| d.max(Duration::from_millis(100))))
                    .transpose()?,
                iterations: s.iterations,
                interval: secs("interval", s.interval)?,
                clear: stdout_tty && !s.json && s.watch.is_some(),
            };
            cli::stats::run(&stats, &mut std::io::stdout().lock())?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Sub::Cluster(ClusterArgs {
            sub: ClusterSub::Status { json },
        })) => {
            let mut opts = opts;
            if cli.conn.timeout.is_none() {
                opts.read_timeout = Some(STATS_TIMEOUT);
            }
            let mut conn = cli::conn::Conn::connect(&opts)?;
            let status = cli::cluster::status(&mut conn)?;
            let text = if json {
                format!("{}\n", cli::cluster::to_json(&status))
            } else {
                cli::cluster::to_table(&status)
            };
            std::io::stdout().lock().write_all(text.as_bytes())?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Sub::Command(words)) if cli.command.is_some() => {
            anyhow::bail!("give the command either with -c or as arguments, not both ({words:?})")
        }
        _ => {}
    }
    let interactive = cli.command.is_none()
        && !matches!(cli.sub, Some(Sub::Command(_)))
        && std::io::stdin().is_terminal();
    let style = Style {
        raw: cli.raw || (!cli.no_raw && !stdout_tty),
        // https://no-color.org: a non-empty NO_COLOR turns colour off.
        color: stdout_tty && std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty()),
        errors_to_stderr: !interactive,
        buffered: !interactive && !stdout_tty,
    };
    let mut session = Session::new(opts, style);
    if interactive {
        cli::repl::run(&mut session)?;
        return Ok(ExitCode::SUCCESS);
    }
    // One-shot and script modes: a connection failure is reported once, clearly, up front.
    session.connect()?;
    if let Some(line) = &cli.command {
        session.run_line(line);
    } else if let Some(Sub::Command(words)) = cli.sub {
        session.run_args(words.into_iter().map(String::into_bytes).collect());
    } else {
        let mut input = std::io::BufReader::new(std::io::stdin());
        let mut line = String::new();
        loop {
            // Replies are flushed whenever the next line has not arrived yet, so a program that
            // feeds commands one at a time and waits for each reply never waits forever.
            if !input.buffer().contains(&b'\n') {
                session.flush();
            }
            line.clear();
            if input.read_line(&mut line)? == 0 {
                break;
            }
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if session.run_line(line) == Flow::Quit {
                break;
            }
        }
    }
    session.flush();
    Ok(if session.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
