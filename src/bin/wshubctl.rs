//! wshubctl: the operator's command line for a wshub node's admin API.
//! Tables for people by default, `--json` (one object per line) for scripts.

use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};
use wshub::admin::pb::{self, admin_client::AdminClient};

#[derive(Parser)]
#[command(name = "wshubctl", version, about = "Operate a wshub node over its gRPC admin API")]
struct Cli {
    /// Admin API address: host:port, http://host:port or https://host:port.
    #[arg(long, env = "WSHUB_ADMIN_ADDR", default_value = "127.0.0.1:50051", global = true)]
    addr: String,
    /// Bearer token, when the server requires one.
    #[arg(long, env = "WSHUB_ADMIN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// PEM CA certificate to verify an https:// server with.
    #[arg(long, env = "WSHUB_ADMIN_CA", global = true)]
    ca: Option<std::path::PathBuf>,
    /// Print JSON (one object per line) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Node-wide counters.
    Stats,
    /// List or inspect connected clients.
    Clients {
        #[command(subcommand)]
        command: ClientsCmd,
    },
    /// Close matching clients with a 4000-4999 code.
    Kick {
        #[arg(long, group = "target")]
        client: Option<String>,
        #[arg(long, group = "target")]
        user: Option<String>,
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
    Broadcast {
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
    Send {
        client_id: String,
        /// The message's data: one JSON value.
        #[arg(value_name = "JSON")]
        data: String,
    },
    /// Stream hub events until interrupted.
    Watch {
        /// Event kinds to show (default: all).
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<Kind>,
    },
    /// Turn the node not-ready and close its clients at a paced rate.
    Drain {
        /// Clients closed per second.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Stop after this long even if clients remain.
        #[arg(long, default_value = "60s", value_parser = wshub::config::parse_duration)]
        deadline: Duration,
    },
}

#[derive(Subcommand)]
enum ClientsCmd {
    /// List clients (oldest first, or deepest queue first).
    List {
        #[arg(long)]
        topic: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long, value_enum, default_value = "connected-at")]
        order_by: OrderBy,
        /// Show at most this many clients.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one client.
    Get { client_id: String },
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
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

type Client = AdminClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

#[derive(Clone)]
struct Auth(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

async fn connect(cli: &Cli) -> Result<Client, String> {
    let url = if cli.addr.contains("://") {
        cli.addr.clone()
    } else {
        format!("http://{}", cli.addr)
    };
    let mut endpoint = Endpoint::from_shared(url.clone()).map_err(|e| format!("bad address {url}: {e}"))?;
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &cli.ca {
            let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS: {e}"))?;
    }
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let auth = match &cli.token {
        Some(token) => Some(
            format!("Bearer {token}")
                .parse()
                .map_err(|_| "the token has characters a header cannot carry")?,
        ),
        None => None,
    };
    Ok(AdminClient::with_interceptor(channel, Auth(auth)))
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

fn status(e: Status) -> String {
    e.message().to_string()
}

async fn run(cli: Cli) -> Result<(), String> {
    let mut admin = connect(&cli).await?;
    let json_out = cli.json;
    match cli.command {
        Cmd::Stats => {
            let s = admin
                .get_stats(pb::GetStatsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let uptime = s.uptime.and_then(|d| Duration::try_from(d).ok()).unwrap_or_default();
            let value = json!({
                "version": s.version, "node": s.node, "uptime_seconds": uptime.as_secs(),
                "clients": s.clients, "topics": s.topics,
                "hub_queue_depth": s.hub_queue_depth, "hub_queue_capacity": s.hub_queue_capacity,
                "messages_sent": s.messages_sent, "messages_received": s.messages_received,
                "slow_consumer_evictions": s.slow_consumer_evictions,
            });
            let nodes: Vec<Value> = s
                .nodes
                .iter()
                .map(|n| {
                    let seen = n.last_seen.and_then(|t| std::time::SystemTime::try_from(t).ok());
                    let ago = seen.and_then(|t| t.elapsed().ok()).unwrap_or_default();
                    json!({"id": n.id, "clients": n.clients, "topics": n.topics, "last_seen_seconds_ago": ago.as_secs_f64()})
                })
                .collect();
            if json_out {
                let mut value = value;
                value["nodes"] = Value::Array(nodes);
                value["partial"] = json!(s.partial);
                println!("{value}");
            } else if let Value::Object(map) = value {
                for (k, v) in map {
                    println!(
                        "{k:<24} {}",
                        v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
                    );
                }
                if nodes.len() > 1 {
                    println!();
                    println!("{:<24} {:>8} {:>8} {:>10}", "NODE", "CLIENTS", "TOPICS", "SEEN");
                    for n in &nodes {
                        let ago = n["last_seen_seconds_ago"].as_f64().unwrap_or(0.0);
                        println!(
                            "{:<24} {:>8} {:>8} {:>9.1}s",
                            n["id"].as_str().unwrap_or(""),
                            n["clients"].as_u64().unwrap_or(0),
                            n["topics"].as_u64().unwrap_or(0),
                            ago
                        );
                    }
                }
                partial_note(s.partial, &s.nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>());
            }
        }
        Cmd::Clients {
            command: ClientsCmd::Get { client_id },
        } => {
            let c = admin
                .get_client(pb::GetClientRequest { client_id })
                .await
                .map_err(status)?
                .into_inner();
            print_clients(&[c], json_out);
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
            let (mut shown, mut token, mut total, mut partial) = (Vec::new(), String::new(), 0, false);
            let mut answered = Vec::new();
            while shown.len() < limit {
                let request = pb::ListClientsRequest {
                    topic: topic.clone().unwrap_or_default(),
                    user: user.clone().unwrap_or_default(),
                    page_size: (limit - shown.len()).min(1000) as u32,
                    page_token: token,
                    order_by: order_by as i32,
                };
                let page = admin.list_clients(request).await.map_err(status)?.into_inner();
                total = page.total;
                partial |= page.partial;
                answered = page.nodes;
                shown.extend(page.clients);
                token = page.next_page_token;
                if token.is_empty() {
                    break;
                }
            }
            print_clients(&shown, json_out);
            if !json_out {
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
            let r = admin.kick_clients(request).await.map_err(status)?.into_inner();
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
            let r = admin.broadcast(request).await.map_err(status)?.into_inner();
            let text = format!("queued for {} client(s), {} evicted as slow", r.recipients, r.dropped);
            print_one(
                json_out,
                json!({ "recipients": r.recipients, "dropped": r.dropped, "nodes": r.nodes, "partial": r.partial }),
                text,
            );
            if !json_out {
                partial_note(r.partial, &r.nodes);
            }
        }
        Cmd::Send { client_id, data } => {
            let request = pb::SendToClientRequest {
                client_id: client_id.clone(),
                data,
            };
            let dropped = admin
                .send_to_client(request)
                .await
                .map_err(status)?
                .into_inner()
                .dropped;
            let text = if dropped {
                format!("not sent: {client_id}'s queue was full and it was evicted as slow")
            } else {
                format!("sent to {client_id}")
            };
            print_one(json_out, json!({ "client_id": client_id, "dropped": dropped }), text);
        }
        Cmd::Watch { kinds } => {
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
                .map_err(status)?
                .into_inner();
            while let Some(event) = events.message().await.map_err(status)? {
                let kind = pb::EventKind::try_from(event.kind)
                    .map(|k| k.as_str_name())
                    .unwrap_or("?");
                let kind = kind.trim_start_matches("EVENT_KIND_").to_lowercase();
                let at = event
                    .at
                    .and_then(|t| SystemTime::try_from(t).ok())
                    .map(rfc3339)
                    .unwrap_or_default();
                let value = json!({ "at": at, "kind": kind, "client_id": event.client_id, "topic": event.topic,
                    "reason": event.reason, "code": event.code });
                let text = format!(
                    "{at} {kind:<12} {:<10} {} {} {}",
                    event.client_id,
                    event.topic,
                    event.reason,
                    if event.code > 0 {
                        event.code.to_string()
                    } else {
                        String::new()
                    }
                );
                print_one(json_out, value, text.trim_end().to_string());
            }
        }
        Cmd::Drain { rate, deadline } => {
            let request = pb::DrainRequest {
                rate_per_second: rate,
                deadline: prost_types::Duration::try_from(deadline).ok(),
            };
            let mut progress = admin.drain(request).await.map_err(status)?.into_inner();
            while let Some(p) = progress.message().await.map_err(status)? {
                let text = format!(
                    "closed {:>6}  remaining {:>6}{}",
                    p.closed,
                    p.remaining,
                    if p.done { "  done" } else { "" }
                );
                print_one(
                    json_out,
                    json!({ "closed": p.closed, "remaining": p.remaining, "done": p.done }),
                    text,
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

fn print_clients(clients: &[pb::ClientInfo], json_out: bool) {
    if !json_out {
        println!(
            "{:<10} {:<16} {:<21} {:<20} {:>6} {:>9} {:>6} {:>9} {:>9}  TOPICS",
            "ID", "USER", "REMOTE", "CONNECTED", "DEPTH", "BYTES", "PEAK", "SENT", "RECEIVED"
        );
    }
    for c in clients {
        let connected = c
            .connected_at
            .and_then(|t| SystemTime::try_from(t).ok())
            .map(rfc3339)
            .unwrap_or_default();
        if json_out {
            let value = json!({
                "id": c.id, "user": c.user, "remote_addr": c.remote_addr, "connected_at": connected, "topics": c.topics,
                "queue_depth": c.queue_depth, "queue_bytes": c.queue_bytes, "queue_high_water": c.queue_high_water,
                "messages_sent": c.messages_sent, "messages_received": c.messages_received, "node": c.node,
            });
            println!("{value}");
        } else {
            println!(
                "{:<10} {:<16} {:<21} {:<20} {:>6} {:>9} {:>6} {:>9} {:>9}  {}",
                c.id,
                if c.user.is_empty() { "-" } else { c.user.as_str() },
                c.remote_addr,
                connected,
                c.queue_depth,
                c.queue_bytes,
                c.queue_high_water,
                c.messages_sent,
                c.messages_received,
                c.topics.join(",")
            );
        }
    }
}
