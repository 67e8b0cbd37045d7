//! wshubctl: the operator's command line for a wshub node's admin API.
//! Tables for people by default, `--json` (one object per line) for scripts.

mod connect;
mod profile;
mod top;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anstyle::{AnsiColor, Style};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use wshub::admin::pb;

use connect::{Client, Failure};

/// Where the admin API is when neither a flag, the environment nor a
/// profile says (the node's own `--admin-addr` default).
const DEFAULT_ADDR: &str = "127.0.0.1:50051";

#[derive(Parser)]
#[command(
    name = "wshubctl",
    version,
    about = "Operate a wshub node over its gRPC admin API",
    after_help = "Each setting comes from its flag, else its environment variable, else the profile \
                  (--profile, or the profile file's `default`), else its default."
)]
struct Cli {
    /// The profile file [default: $XDG_CONFIG_HOME/wshubctl/config.toml, or
    /// ~/.config/wshubctl/config.toml]: named admin targets (see `wshubctl profiles`).
    #[arg(long, env = "WSHUBCTL_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The profile to take addr, token_file, ca, cert and key from.
    #[arg(long, env = "WSHUBCTL_PROFILE", global = true, value_name = "NAME")]
    profile: Option<String>,
    /// Admin API address: host:port, http://host:port or https://host:port.
    #[arg(long, env = "WSHUB_ADMIN_ADDR", default_value = DEFAULT_ADDR, global = true)]
    addr: String,
    /// Bearer token, when the server requires one (--admin-token).
    #[arg(
        long,
        env = "WSHUB_ADMIN_TOKEN",
        hide_env_values = true,
        global = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// A file holding the bearer token (surrounding whitespace ignored), as
    /// the server's --admin-token-file: keeps it out of the process list.
    #[arg(long, env = "WSHUB_ADMIN_TOKEN_FILE", global = true)]
    token_file: Option<std::path::PathBuf>,
    /// PEM CA certificate to verify an https:// server with.
    #[arg(long, env = "WSHUB_ADMIN_CA", global = true)]
    ca: Option<std::path::PathBuf>,
    /// PEM client certificate, for an admin port with --admin-tls-client-ca (with --key).
    #[arg(long, env = "WSHUB_ADMIN_CERT", global = true, requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// The client certificate's PEM private key.
    #[arg(long, env = "WSHUB_ADMIN_KEY", global = true, requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// Print JSON (one object per line) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Node-wide counters (cluster-wide sums on a clustered node), and
    /// whether the node is ready or draining.
    #[command(after_help = "Example:\n  wshubctl --addr 10.0.1.5:50051 --token-file /etc/wshub/admin-token stats")]
    Stats,
    /// List or inspect connected clients.
    #[command(after_help = "Example:\n  wshubctl clients list --order-by queue-depth --limit 10")]
    Clients {
        #[command(subcommand)]
        command: ClientsCmd,
    },
    /// Close matching clients with a 4000-4999 code.
    #[command(after_help = "Example:\n  wshubctl kick --user mallory --code 4003 --reason \"banned\"")]
    Kick {
        /// The client with this id (`c-42`, or `c-42@node-b` in a cluster).
        #[arg(long, group = "target")]
        client: Option<String>,
        /// Every client of this user (the token's `sub`).
        #[arg(long, group = "target")]
        user: Option<String>,
        /// Every subscriber of this topic.
        #[arg(long, group = "target")]
        topic: Option<String>,
        /// Close code, 4000-4999.
        #[arg(long, default_value_t = 4000)]
        code: u32,
        /// Close reason, at most 123 bytes.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Send JSON to every client, or to a topic's subscribers.
    #[command(after_help = "Example:\n  wshubctl broadcast --topic news '{\"headline\":\"deploy at 5\"}'")]
    Broadcast {
        /// Only this topic's subscribers (default: every client).
        #[arg(long)]
        topic: Option<String>,
        /// Client ids to leave out.
        #[arg(long)]
        exclude: Vec<String>,
        /// The message's data: one JSON value.
        #[arg(value_name = "JSON")]
        data: String,
    },
    /// Send JSON to one client.
    #[command(after_help = "Example:\n  wshubctl send c-42 '{\"note\":\"hello\"}'")]
    Send {
        /// The client's id, as `clients list` shows it.
        client_id: String,
        /// The message's data: one JSON value.
        #[arg(value_name = "JSON")]
        data: String,
    },
    /// Stream hub events, one line each, until Ctrl-C; exits 1 when the
    /// node ends the stream (shutting down, or the watch fell behind).
    #[command(after_help = "Example:\n  wshubctl watch --kinds evicted,kicked")]
    Watch {
        /// Event kinds to show (default: all).
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<Kind>,
    },
    /// A full-screen live view: stats, rates and the deepest queues (q to quit).
    #[command(after_help = "Example:\n  wshubctl top --interval 2s")]
    Top {
        /// How often to refresh.
        #[arg(long, default_value = "1s", value_parser = wshub::config::parse_duration)]
        interval: Duration,
    },
    /// Turn the node not-ready and close its clients at a paced rate.
    #[command(after_help = "Example:\n  wshubctl drain --rate 200 --deadline 60s")]
    Drain {
        /// Clients closed per second.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Stop after this long even if clients remain [default: the server's, 300s].
        #[arg(long, value_parser = wshub::config::parse_duration)]
        deadline: Option<Duration>,
    },
    /// What a topic's history keeps (a node with --history-size), oldest first.
    #[command(after_help = "Example:\n  wshubctl history chat.room1 --since 40")]
    History {
        /// The topic.
        topic: String,
        /// Messages after this offset (0: from the oldest kept).
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// At most this many (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// List the profile file's profiles (the default marked with *); connects nowhere.
    #[command(after_help = "Example:\n  wshubctl profiles")]
    Profiles,
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  wshubctl completions bash > /etc/bash_completion.d/wshubctl")]
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum ClientsCmd {
    /// List clients (oldest first, or deepest queue first).
    #[command(after_help = "Example:\n  wshubctl clients list --topic news --order-by queue-depth")]
    List {
        /// Only subscribers of this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Only clients of this user.
        #[arg(long)]
        user: Option<String>,
        /// Oldest first, or deepest send queue first.
        #[arg(long, value_enum, default_value = "connected-at")]
        order_by: OrderBy,
        /// Show at most this many clients; 0 shows them all.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one client.
    #[command(after_help = "Example:\n  wshubctl clients get c-42")]
    Get {
        /// The client's id, as `clients list` shows it.
        client_id: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OrderBy {
    ConnectedAt,
    QueueDepth,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Connected,
    Disconnected,
    Subscribed,
    Unsubscribed,
    Kicked,
    Evicted,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // A profile that cannot be used is a usage error, like a bad flag.
    let (profiles, path) = match with_profile(&mut cli, &matches) {
        Ok(found) => found,
        Err(message) => {
            eprintln!("error: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Cmd::Profiles = cli.command {
        print_profiles(&profiles, path.as_deref(), cli.json);
        return std::process::ExitCode::SUCCESS;
    }
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Reads the profile file and fills in, from the chosen profile, each
/// setting that neither a flag nor the environment gave.
/// Answers the file and where it is (`None`: no HOME to look in).
fn with_profile(cli: &mut Cli, matches: &ArgMatches) -> Result<(profile::File, Option<PathBuf>), String> {
    let (path, explicit) = match &cli.config {
        Some(path) => (path.clone(), true),
        None => match profile::default_path() {
            Some(path) => (path, false),
            None if cli.profile.is_some() => return Err("--profile needs --config (no HOME to look in)".into()),
            None => return Ok((profile::File::default(), None)),
        },
    };
    let file = profile::File::read(&path, explicit)?;
    if matches!(cli.command, Cmd::Profiles) {
        return Ok((file, Some(path)));
    }
    let Some(chosen) = file.pick(cli.profile.as_deref(), &path)? else {
        return Ok((file, Some(path)));
    };
    let given = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let chosen = chosen.clone();
    if let (false, Some(addr)) = (given("addr"), chosen.addr) {
        cli.addr = addr;
    }
    if !given("token") && !given("token_file") {
        cli.token_file = chosen.token_file.or(cli.token_file.take());
    }
    if !given("ca") {
        cli.ca = chosen.ca.or(cli.ca.take());
    }
    if !given("cert") && !given("key") {
        cli.cert = chosen.cert.or(cli.cert.take());
        cli.key = chosen.key.or(cli.key.take());
    }
    Ok((file, Some(path)))
}

fn print_profiles(file: &profile::File, path: Option<&Path>, json_out: bool) {
    if file.list().next().is_none() {
        match path {
            Some(path) => eprintln!("no profiles in {}", path.display()),
            None => eprintln!("no profile file: neither --config nor HOME is set"),
        }
        return;
    }
    let show = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    for (name, p, default) in file.list() {
        if json_out {
            let line = json!({
                "name": name, "default": default, "addr": p.addr, "token_file": show(&p.token_file),
                "ca": show(&p.ca), "cert": show(&p.cert), "key": show(&p.key),
            });
            println!("{line}");
        } else {
            let mark = if default { "*" } else { " " };
            println!("{mark} {name:<16} {}", p.addr.as_deref().unwrap_or(DEFAULT_ADDR));
        }
    }
}

/// Largest page asked for at once.
const PAGE: usize = 1000;

async fn run(cli: Cli) -> Result<(), String> {
    if let Cmd::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "wshubctl", &mut std::io::stdout());
        return Ok(());
    }
    if matches!(cli.command, Cmd::Top { .. }) && (cli.json || !std::io::stdout().is_terminal()) {
        return Err("top needs a terminal; scripts can poll `wshubctl --json stats`".into());
    }
    let token = match &cli.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => cli.token.clone(),
    };
    let credentials = connect::Credentials {
        token: token.as_deref(),
        ca: cli.ca.as_deref(),
        cert: cli.cert.as_deref().zip(cli.key.as_deref()),
    };
    let target = connect::Target::new(&cli.addr, credentials)?;
    let mut admin = target.connect().await.map_err(|f| f.describe(&target))?;
    let fail = |e: tonic::Status| Failure::Status(e).describe(&target);
    let json_out = cli.json;
    match cli.command {
        Cmd::Completions { .. } | Cmd::Profiles => unreachable!("handled above"),
        Cmd::Stats => {
            let s = admin
                .get_stats(pb::GetStatsRequest {})
                .await
                .map_err(fail)?
                .into_inner();
            print_stats(&s, json_out);
        }
        Cmd::Clients {
            command: ClientsCmd::Get { client_id },
        } => {
            let c = admin
                .get_client(pb::GetClientRequest { client_id })
                .await
                .map_err(fail)?
                .into_inner();
            if json_out {
                println!("{}", client_json(&c));
            } else {
                print_clients(&[c]);
            }
        }
        Cmd::Clients {
            command:
                ClientsCmd::List {
                    topic,
                    user,
                    order_by,
                    limit,
                },
        } => {
            let order_by = match order_by {
                OrderBy::ConnectedAt => pb::ClientOrder::ConnectedAt,
                OrderBy::QueueDepth => pb::ClientOrder::QueueDepth,
            };
            let limit = if limit == 0 { usize::MAX } else { limit };
            let (mut shown, mut token, mut partial) = (Vec::new(), String::new(), false);
            // At least one page, even for a small limit: it carries the total.
            let (total, answered) = loop {
                let request = pb::ListClientsRequest {
                    topic: topic.clone().unwrap_or_default(),
                    user: user.clone().unwrap_or_default(),
                    page_size: (limit - shown.len()).min(PAGE) as u32,
                    page_token: token,
                    order_by: order_by as i32,
                };
                let page = admin.list_clients(request).await.map_err(fail)?.into_inner();
                partial |= page.partial;
                shown.extend(page.clients);
                token = page.next_page_token;
                if token.is_empty() || shown.len() >= limit {
                    break (page.total, page.nodes);
                }
            };
            shown.truncate(limit);
            if json_out {
                let clients: Vec<Value> = shown.iter().map(client_json).collect();
                println!(
                    "{}",
                    json!({ "total": total, "clients": clients, "nodes": answered, "partial": partial })
                );
            } else {
                print_clients(&shown);
                println!("{} of {total} clients", shown.len());
                partial_note(partial, &answered);
            }
        }
        Cmd::Kick {
            client,
            user,
            topic,
            code,
            reason,
        } => {
            use pb::kick_clients_request::Target;
            let target = match (client, user, topic) {
                (Some(id), _, _) => Target::ClientId(id),
                (_, Some(user), _) => Target::User(user),
                (_, _, Some(topic)) => Target::Topic(topic),
                _ => return Err("kick needs one of --client, --user or --topic".into()),
            };
            let request = pb::KickClientsRequest {
                target: Some(target),
                code,
                reason,
            };
            let r = admin.kick_clients(request).await.map_err(fail)?.into_inner();
            let kicked = r.kicked;
            print_one(
                json_out,
                json!({ "kicked": kicked, "nodes": r.nodes, "partial": r.partial }),
                format!("kicked {kicked} client(s)"),
            );
            if !json_out {
                partial_note(r.partial, &r.nodes);
            }
        }
        Cmd::Broadcast { topic, exclude, data } => {
            let request = pb::BroadcastRequest {
                topic: topic.unwrap_or_default(),
                data,
                exclude_client_ids: exclude,
            };
            let r = admin.broadcast(request).await.map_err(fail)?.into_inner();
            let mut text = format!("queued for {} client(s), {} evicted as slow", r.recipients, r.dropped);
            let mut value =
                json!({ "recipients": r.recipients, "dropped": r.dropped, "nodes": r.nodes, "partial": r.partial });
            if r.offset > 0 {
                text.push_str(&format!("; offset {} in the topic's history", r.offset));
                value["offset"] = json!(r.offset);
            }
            print_one(json_out, value, text);
            if !json_out {
                partial_note(r.partial, &r.nodes);
            }
        }
        Cmd::Send { client_id, data } => {
            let request = pb::SendToClientRequest {
                client_id: client_id.clone(),
                data,
            };
            let dropped = admin.send_to_client(request).await.map_err(fail)?.into_inner().dropped;
            let text = if dropped {
                format!("not sent: {client_id}'s queue was full and it was evicted as slow")
            } else {
                format!("sent to {client_id}")
            };
            print_one(json_out, json!({ "client_id": client_id, "dropped": dropped }), text);
        }
        Cmd::Watch { kinds } => watch(&mut admin, &kinds, json_out, target.shown()).await.map_err(|e| match e {
            Ended::Status(status) if status.code() == tonic::Code::ResourceExhausted => format!(
                "watch ended: it fell behind the node's events twice within a minute and the node ended the stream ({}); start it again, with fewer --kinds if it keeps happening",
                status.message()
            ),
            Ended::Status(status) => fail(status),
            Ended::ByNode => "watch ended: the node ended the stream (it is shutting down)".to_string(),
        })?,
        Cmd::History { topic, since, limit } => {
            let r = admin
                .history(pb::HistoryRequest {
                    topic: topic.clone(),
                    since,
                    limit,
                })
                .await
                .map_err(fail)?
                .into_inner();
            print_history(&topic, since, &r, json_out);
        }
        Cmd::Top { interval } => top::run(admin, target.shown().to_string(), interval).await?,
        Cmd::Drain { rate, deadline } => drain(&mut admin, rate, deadline, json_out).await.map_err(fail)?,
    }
    Ok(())
}

fn print_history(topic: &str, since: u64, r: &pb::HistoryResponse, json_out: bool) {
    if json_out {
        let messages: Vec<Value> = r
            .messages
            .iter()
            .map(|m| json!({"offset": m.offset, "frame": serde_json::from_str::<Value>(&m.frame).unwrap_or(Value::Null)}))
            .collect();
        println!(
            "{}",
            json!({"topic": topic, "epoch": r.epoch, "offset": r.offset, "trimmed": r.trimmed, "messages": messages})
        );
        return;
    }
    println!("topic {topic}: latest offset {}, epoch {}", r.offset, r.epoch);
    if r.trimmed {
        println!("(messages right after offset {since} are no longer kept)");
    }
    for m in &r.messages {
        println!("{:>8}  {}", m.offset, m.frame);
    }
}

/// Whether the node takes new clients: `ready`, or why not.
pub fn state(s: &pb::Stats) -> String {
    match s.ready {
        true => "ready".to_string(),
        false => format!("not ready: {}", s.not_ready_reason),
    }
}

fn print_stats(s: &pb::Stats, json_out: bool) {
    let uptime = s.uptime.and_then(|d| Duration::try_from(d).ok()).unwrap_or_default();
    let value = json!({
        "version": s.version, "node": s.node, "uptime_seconds": uptime.as_secs(),
        "state": state(s),
        "clients": s.clients, "topics": s.topics,
        "hub_queue_depth": s.hub_queue_depth, "hub_queue_capacity": s.hub_queue_capacity,
        "messages_sent": s.messages_sent, "messages_received": s.messages_received,
        "bytes_sent": s.bytes_sent, "bytes_received": s.bytes_received,
        "slow_consumer_evictions": s.slow_consumer_evictions,
        "history_topics": s.history_topics, "history_messages": s.history_messages,
        "history_bytes": s.history_bytes,
    });
    let nodes: Vec<Value> = s
        .nodes
        .iter()
        .map(|n| {
            json!({"id": n.id, "clients": n.clients, "topics": n.topics, "last_seen_seconds_ago": seen_ago(n).as_secs_f64()})
        })
        .collect();
    if json_out {
        let mut value = value;
        value["nodes"] = Value::Array(nodes);
        value["partial"] = json!(s.partial);
        println!("{value}");
        return;
    }
    if let Value::Object(map) = value {
        for (k, v) in map {
            println!(
                "{k:<24} {}",
                v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
            );
        }
    }
    if s.nodes.len() > 1 {
        println!();
        println!("{:<24} {:>8} {:>8} {:>10}", "NODE", "CLIENTS", "TOPICS", "SEEN");
        for n in &s.nodes {
            let ago = seen_ago(n).as_secs_f64();
            println!("{:<24} {:>8} {:>8} {:>9.1}s", n.id, n.clients, n.topics, ago);
        }
    }
    partial_note(s.partial, &s.nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>());
}

/// How long ago a node last refreshed its presence.
fn seen_ago(node: &pb::NodeStats) -> Duration {
    let seen = node.last_seen.and_then(|t| SystemTime::try_from(t).ok());
    seen.and_then(|t| t.elapsed().ok()).unwrap_or_default()
}

/// On stderr, so tables stay clean: a cluster-wide answer missing a node.
fn partial_note(partial: bool, answered: &[String]) {
    if partial {
        eprintln!(
            "partial: a live node did not answer in time; answered: {}",
            answered.join(", ")
        );
    }
}

/// Events, one line each: coloured on a terminal (unless NO_COLOR is
/// set), plain when piped.
/// Why a watch ended when the operator did not stop it.
enum Ended {
    Status(tonic::Status),
    ByNode,
}

/// Streams events until Ctrl-C (exit 0) or the node ends the stream (an error, said why).
async fn watch(admin: &mut Client, kinds: &[Kind], json_out: bool, at: &str) -> Result<(), Ended> {
    use std::io::Write;
    let kinds = kinds
        .iter()
        .map(|k| match k {
            Kind::Connected => pb::EventKind::Connected,
            Kind::Disconnected => pb::EventKind::Disconnected,
            Kind::Subscribed => pb::EventKind::Subscribed,
            Kind::Unsubscribed => pb::EventKind::Unsubscribed,
            Kind::Kicked => pb::EventKind::Kicked,
            Kind::Evicted => pb::EventKind::Evicted,
        } as i32)
        .collect();
    let mut events = admin
        .watch_events(pb::WatchEventsRequest { kinds })
        .await
        .map_err(Ended::Status)?
        .into_inner();
    let mut out = anstream::stdout();
    if !json_out {
        eprintln!("watching {at}'s events; Ctrl-C stops");
        if std::io::stdout().is_terminal() {
            let _ = writeln!(out, "{:<24} {:<12} {:<10} TOPIC REASON CODE", "TIME", "KIND", "CLIENT");
        }
    }
    loop {
        let event = tokio::select! {
            event = events.message() => event.map_err(Ended::Status)?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(event) = event else { return Err(Ended::ByNode) };
        let kind = pb::EventKind::try_from(event.kind).unwrap_or(pb::EventKind::Unspecified);
        let name = match kind {
            // The stream's own note: the watcher fell behind and missed `code` events.
            pb::EventKind::Unspecified => "lagged",
            kind => kind.as_str_name().trim_start_matches("EVENT_KIND_"),
        }
        .to_lowercase();
        let at = event
            .at
            .and_then(|t| SystemTime::try_from(t).ok())
            .map(rfc3339)
            .unwrap_or_default();
        if json_out {
            let value = json!({ "at": at, "kind": name, "client_id": event.client_id, "topic": event.topic,
                "reason": event.reason, "code": event.code });
            println!("{value}");
            continue;
        }
        let style = match kind {
            pb::EventKind::Connected => Style::new().fg_color(Some(AnsiColor::Green.into())),
            pb::EventKind::Disconnected => Style::new().dimmed(),
            pb::EventKind::Subscribed | pb::EventKind::Unsubscribed => {
                Style::new().fg_color(Some(AnsiColor::Cyan.into()))
            }
            pb::EventKind::Kicked => Style::new().fg_color(Some(AnsiColor::Yellow.into())),
            pb::EventKind::Evicted => Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
            pb::EventKind::Unspecified => Style::new().fg_color(Some(AnsiColor::Magenta.into())),
        };
        let code = if event.code > 0 {
            event.code.to_string()
        } else {
            String::new()
        };
        let rest = format!("{:<10} {} {} {}", event.client_id, event.topic, event.reason, code);
        let line = format!("{at} {style}{name:<12}{style:#} {}", rest.trim_end());
        // A closed pipe (`| head`) ends the watch quietly.
        if writeln!(out, "{}", line.trim_end()).is_err() {
            break;
        }
    }
    Ok(())
}

/// A drain's progress: a bar on a terminal, a line per change when piped,
/// an object per message with --json.
async fn drain(admin: &mut Client, rate: u32, deadline: Option<Duration>, json_out: bool) -> Result<(), tonic::Status> {
    let request = pb::DrainRequest {
        rate_per_second: rate,
        deadline: deadline.and_then(|d| prost_types::Duration::try_from(d).ok()),
    };
    let mut progress = admin.drain(request).await?.into_inner();
    let bar = (!json_out && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} draining [{bar:40}] {pos}/{len} closed, {msg}, ~{eta} left",
        )
        .expect("a valid template")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let mut last = None;
    while let Some(p) = progress.message().await? {
        if let Some(bar) = &bar {
            bar.set_length(p.closed + p.remaining);
            bar.set_position(p.closed);
            bar.set_message(format!("{} left", p.remaining));
        }
        if json_out {
            println!(
                "{}",
                json!({ "closed": p.closed, "remaining": p.remaining, "done": p.done })
            );
        } else if bar.is_none() && (last != Some((p.closed, p.remaining)) || p.done) {
            let done = if p.done { "  done" } else { "" };
            println!("closed {:>6}  remaining {:>6}{done}", p.closed, p.remaining);
        }
        last = Some((p.closed, p.remaining));
        if p.done {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
                println!("drained: closed {}, {} remaining", p.closed, p.remaining);
            }
            if p.remaining > 0 {
                eprintln!(
                    "the deadline passed with {} client(s) left; run drain again to close them",
                    p.remaining
                );
            }
        }
    }
    Ok(())
}

fn print_one(json_out: bool, value: Value, text: String) {
    if json_out {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn connected_at(c: &pb::ClientInfo) -> String {
    c.connected_at
        .and_then(|t| SystemTime::try_from(t).ok())
        .map(rfc3339)
        .unwrap_or_default()
}

fn client_json(c: &pb::ClientInfo) -> Value {
    json!({
        "id": c.id, "user": c.user, "remote_addr": c.remote_addr, "connected_at": connected_at(c), "topics": c.topics,
        "queue_depth": c.queue_depth, "queue_bytes": c.queue_bytes, "queue_high_water": c.queue_high_water,
        "messages_sent": c.messages_sent, "messages_received": c.messages_received,
        "bytes_sent": c.bytes_sent, "bytes_received": c.bytes_received, "node": c.node,
    })
}

fn print_clients(clients: &[pb::ClientInfo]) {
    println!(
        "{:<10} {:<16} {:<21} {:<20} {:>6} {:>9} {:>6} {:>9} {:>9}  TOPICS",
        "ID", "USER", "REMOTE", "CONNECTED", "DEPTH", "BYTES", "PEAK", "SENT", "RECEIVED"
    );
    for c in clients {
        println!(
            "{:<10} {:<16} {:<21} {:<20} {:>6} {:>9} {:>6} {:>9} {:>9}  {}",
            c.id,
            if c.user.is_empty() { "-" } else { c.user.as_str() },
            c.remote_addr,
            connected_at(c),
            c.queue_depth,
            c.queue_bytes,
            c.queue_high_water,
            c.messages_sent,
            c.messages_received,
            c.topics.join(",")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command's help shows an example and every argument says what
    /// it is: a new one without them fails here.
    #[test]
    fn every_command_has_an_example_and_every_argument_help() {
        fn check(command: &clap::Command, path: &str) {
            for sub in command.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.has_subcommands() {
                    check(sub, &path);
                    continue;
                }
                let example = sub.get_after_help().map(|h| h.to_string()).unwrap_or_default();
                assert!(example.starts_with("Example:\n  wshubctl "), "{path}: no example");
                for arg in sub.get_arguments() {
                    let id = arg.get_id().as_str();
                    if matches!(id, "help" | "version") {
                        continue;
                    }
                    assert!(arg.get_help().is_some(), "{path}: {id} has no help");
                }
            }
        }
        let cli = Cli::command();
        check(&cli, "wshubctl");
        for arg in cli.get_arguments() {
            assert!(arg.get_help().is_some(), "--{} has no help", arg.get_id());
        }
    }
}
