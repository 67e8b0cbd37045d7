//! wshub-bench: a WebSocket fan-out load generator for wshub and for the
//! seed design (go-hub), so both are measured by the same tool in one run.
//! See docs/performance.md.

mod client;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use client::{Received, Target, Ws};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "wshub-bench",
    about = "Fan-out load generator for wshub (and the go-hub baseline)"
)]
struct Cli {
    /// The server's WebSocket address.
    #[arg(long, default_value = "127.0.0.1:8080", global = true)]
    addr: SocketAddr,
    /// The WebSocket path.
    #[arg(long, default_value = "/ws", global = true)]
    path: String,
    /// Which protocol the server speaks.
    #[arg(long, value_enum, default_value = "wshub", global = true)]
    target: Target,
    /// The server's process id, to read its memory from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// wshub's admin address (admin scenario; eviction events in stall).
    #[arg(long, global = true)]
    admin: Option<String>,
    /// Loopback source addresses to spread connections over (127.0.0.1..N).
    #[arg(long, default_value_t = 8, global = true)]
    sources: u8,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 200, global = true)]
    parallel: usize,
    /// Print one JSON object instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Sign a client token (HS256, `sub` bench-N, `topics` ["bench.*", "t"]) with this
    /// secret for every connection, to measure a node started with --jwt-secret.
    #[arg(long, global = true)]
    jwt_secret: Option<String>,
    /// Cluster mode: spread the receiving clients evenly over these WebSocket addresses
    /// (nodes of one cluster, comma-separated); the publisher stays on --addr.
    #[arg(long, global = true, value_delimiter = ',')]
    nodes: Vec<SocketAddr>,
    /// wshub: every receiving client subscribes to this topic and messages are published
    /// to it (default: to everyone), e.g. to measure a topic with history (--history-size).
    #[arg(long, global = true)]
    topic: Option<String>,
    /// What to call the server in the report (default: --target), e.g. `three-nodes`.
    #[arg(long, global = true)]
    label: Option<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone)]
enum Scenario {
    /// Open N connections and hold them: memory per connection and connect rate.
    Idle {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// How long to hold them before measuring.
        #[arg(long, default_value = "3s", value_parser = wshub::config::parse_duration)]
        hold: Duration,
    },
    /// N receivers, M messages published as fast as possible by one client.
    Burst(BurstArgs),
    /// N receivers, R messages a second for T.
    Steady(SteadyArgs),
    /// Steady twice: all clients reading, then a fraction never reading.
    Stall {
        #[command(flatten)]
        steady: SteadyArgs,
        /// Fraction of clients that never read.
        #[arg(long, default_value_t = 0.05)]
        stalled: f64,
        /// The server's per-client queue byte cap, for the RSS bound.
        #[arg(long, default_value = "1MiB", value_parser = wshub::config::parse_bytes)]
        queue_bytes: usize,
    },
    /// Burst, with the messages injected through the admin Broadcast RPC.
    Admin(BurstArgs),
    /// Open N connections, say `ready` on stderr, and wait until each has
    /// received M stamped messages (sent by someone else, e.g. an admin
    /// Broadcast) or nothing came for --idle: how many clients got them all.
    Listen {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        messages: u64,
        /// Give up once nothing has arrived for this long after the first message.
        #[arg(long, default_value = "10s", value_parser = wshub::config::parse_duration)]
        idle: Duration,
        /// How long to wait for the first message.
        #[arg(long, default_value = "600s", value_parser = wshub::config::parse_duration)]
        wait: Duration,
    },
    /// Admin GetStats latency, first on a quiet node, then while one client
    /// publishes to all N clients as fast as it can (needs --admin).
    Flood {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// How long each phase (quiet, flood) calls GetStats.
        #[arg(long, default_value = "5s", value_parser = wshub::config::parse_duration)]
        duration: Duration,
        /// Bytes per message, about.
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
}

#[derive(clap::Args, Clone, Copy)]
struct SteadyArgs {
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    #[arg(long, default_value_t = 50)]
    rate: u64,
    #[arg(long, default_value = "10s", value_parser = wshub::config::parse_duration)]
    duration: Duration,
    /// Bytes per message, about.
    #[arg(long, default_value_t = 100)]
    size: usize,
}

#[derive(clap::Args, Clone)]
struct BurstArgs {
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    #[arg(long, default_value_t = 100)]
    messages: u64,
    /// Bytes per message, about.
    #[arg(long, default_value_t = 100)]
    size: usize,
}

/// One scenario's results, printed as a table or as JSON.
struct Report {
    rows: Vec<(&'static str, String)>,
}

impl Report {
    fn new(scenario: &str, target: Target) -> Self {
        let target = clap::ValueEnum::to_possible_value(&target).map_or_else(String::new, |v| v.get_name().to_string());
        Report {
            rows: vec![("scenario", scenario.to_string()), ("target", target)],
        }
    }
    fn add(&mut self, key: &'static str, value: impl ToString) {
        self.rows.push((key, value.to_string()));
    }
    fn latency(&mut self, hist: &Histogram<u64>, quantiles: &[(&'static str, f64)]) {
        for (name, q) in quantiles {
            self.add(name, format!("{:.2}", hist.value_at_quantile(*q) as f64 / 1000.0));
        }
        self.add("max_ms", format!("{:.2}", hist.max() as f64 / 1000.0));
    }
    fn print(&self, json: bool) {
        if json {
            let map: serde_json::Map<String, serde_json::Value> = self
                .rows
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
                .collect();
            println!("{}", serde_json::Value::Object(map));
        } else {
            for (k, v) in &self.rows {
                println!("{k:<24} {v}");
            }
            println!();
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Go raises its soft file limit to the hard one at start; do the same.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let mut report = match cli.scenario.clone() {
        Scenario::Idle { clients, hold } => idle(&cli, clients, hold).await?,
        Scenario::Listen {
            clients,
            messages,
            idle,
            wait,
        } => listen(&cli, clients, messages, idle, wait).await?,
        Scenario::Burst(a) => burst(&cli, a.clients, a.messages, a.size, false).await?,
        Scenario::Admin(a) => burst(&cli, a.clients, a.messages, a.size, true).await?,
        Scenario::Flood {
            clients,
            duration,
            size,
        } => flood(&cli, clients, duration, size).await?,
        Scenario::Steady(args) => {
            let mut report = Report::new("steady", cli.target);
            let run = steady(&cli, &args, 0).await?;
            run.fill(&mut report);
            report
        }
        Scenario::Stall {
            steady,
            stalled,
            queue_bytes,
        } => stall(&cli, &steady, stalled, queue_bytes).await?,
    };
    if let Some(label) = &cli.label {
        report.rows[1].1 = label.clone();
    }
    report.print(cli.json);
    Ok(())
}

/// Opens `n` receiving connections: to --addr, or spread evenly over --nodes.
async fn connect_all(cli: &Cli, n: usize) -> Result<(Vec<Ws>, Duration), String> {
    let start = Instant::now();
    let nodes = if cli.nodes.is_empty() {
        vec![cli.addr]
    } else {
        cli.nodes.clone()
    };
    let mut conns = Vec::with_capacity(n);
    for (i, node) in nodes.iter().enumerate() {
        let share = n / nodes.len() + usize::from(i < n % nodes.len());
        let jwt = cli.jwt_secret.as_deref();
        conns.extend(client::connect_many(*node, &cli.path, share, cli.sources, cli.parallel, jwt).await);
    }
    if conns.len() < n {
        return Err(format!("only {} of {n} connections opened", conns.len()));
    }
    if let (Target::Wshub, Some(topic)) = (cli.target, &cli.topic) {
        let subscribe = format!(r#"{{"type":"subscribe","topic":"{topic}"}}"#);
        for ws in &mut conns {
            ws.send(Message::text(subscribe.clone()))
                .await
                .map_err(|e| format!("subscribe: {e}"))?;
        }
    }
    Ok((conns, start.elapsed()))
}

async fn idle(cli: &Cli, n: usize, hold: Duration) -> Result<Report, String> {
    let before = client::rss_kib(cli.server_pid);
    let (conns, took) = connect_all(cli, n).await?;
    tokio::time::sleep(hold).await;
    let after = client::rss_kib(cli.server_pid);
    let mut report = Report::new("idle", cli.target);
    report.add("clients", n);
    report.add("connect_per_s", format!("{:.0}", n as f64 / took.as_secs_f64()));
    rss_rows(&mut report, before, after, n);
    drop(conns);
    Ok(report)
}

async fn listen(cli: &Cli, n: usize, messages: u64, idle: Duration, wait: Duration) -> Result<Report, String> {
    let (conns, took) = connect_all(cli, n).await?;
    let (receivers, _sinks) = spawn_receivers(conns);
    eprintln!("ready: {n} clients connected");
    let expected = n as u64 * messages;
    let first = async {
        while receivers.progress.load(Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let started = tokio::time::timeout(wait, first).await.is_ok();
    let start = Instant::now();
    let last = if started {
        client::await_count(&receivers.progress, expected, idle, "listen").await
    } else {
        start
    };
    let (_, total, all) = receivers.finish().await;
    let mut report = Report::new("listen", cli.target);
    report.add("clients", n);
    report.add("connect_per_s", format!("{:.0}", n as f64 / took.as_secs_f64()));
    report.add("deliveries", total);
    report.add("clients_with_all", all.iter().filter(|r| r.count >= messages).count());
    report.add("lost", expected - total.min(expected));
    report.add(
        "spread_s",
        format!("{:.3}", last.saturating_duration_since(start).as_secs_f64()),
    );
    Ok(report)
}

fn rss_rows(report: &mut Report, before: Option<u64>, after: Option<u64>, n: usize) {
    match (before, after) {
        (Some(b), Some(a)) => {
            report.add("server_rss_before_kib", b);
            report.add("server_rss_after_kib", a);
            report.add(
                "rss_per_conn_kb",
                format!("{:.2}", (a.saturating_sub(b) as f64 * 1024.0) / n as f64 / 1000.0),
            );
        }
        _ => report.add("rss_per_conn_kb", "n/a (no --server-pid)"),
    }
}

/// Receivers started on every connection; their sinks are kept so the
/// connections stay open.
struct Receivers {
    progress: Arc<AtomicU64>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<Received>>,
}

fn spawn_receivers(conns: Vec<Ws>) -> (Receivers, Vec<impl Send>) {
    let progress = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let mut sinks = Vec::with_capacity(conns.len());
    let tasks = conns
        .into_iter()
        .map(|ws| {
            let (sink, stream) = ws.split();
            sinks.push(sink);
            tokio::spawn(client::receive(stream, progress.clone(), stop.clone()))
        })
        .collect();
    (Receivers { progress, stop, tasks }, sinks)
}

impl Receivers {
    async fn finish(self) -> (Histogram<u64>, u64, Vec<Received>) {
        self.stop.cancel();
        let mut hist = Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds");
        let (mut total, mut all) = (0, Vec::new());
        for task in self.tasks {
            if let Ok(r) = task.await {
                let _ = hist.add(&r.latency_us);
                total += r.count;
                all.push(r);
            }
        }
        (hist, total, all)
    }
}

/// A publishing connection whose own copies are read and dropped.
async fn publisher(cli: &Cli) -> Result<futures_util::stream::SplitSink<Ws, Message>, String> {
    let path = client::with_token(&cli.path, cli.jwt_secret.as_deref(), 0);
    let ws = client::connect(cli.addr, &path, std::net::Ipv4Addr::LOCALHOST).await?;
    let (sink, mut stream) = ws.split();
    tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    Ok(sink)
}

async fn burst(cli: &Cli, n: usize, messages: u64, size: usize, via_admin: bool) -> Result<Report, String> {
    let before = client::rss_kib(cli.server_pid);
    let (conns, _) = connect_all(cli, n).await?;
    let (receivers, _sinks) = spawn_receivers(conns);
    // Let every connection finish registering before the first message.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = client::rss_kib(cli.server_pid);

    let start = Instant::now();
    if via_admin {
        let addr = cli.admin.clone().ok_or("the admin scenario needs --admin")?;
        let admin = wshub::admin::pb::admin_client::AdminClient::connect(format!("http://{addr}"))
            .await
            .map_err(|e| format!("admin connect: {e}"))?;
        let gate = Arc::new(tokio::sync::Semaphore::new(16));
        for seq in 0..messages {
            let permit = gate.clone().acquire_owned().await.map_err(|e| e.to_string())?;
            let mut admin = admin.clone();
            let data = client::payload(Target::GoHub, seq, size, None);
            tokio::spawn(async move {
                let request = wshub::admin::pb::BroadcastRequest {
                    data,
                    ..Default::default()
                };
                if let Err(e) = admin.broadcast(request).await {
                    eprintln!("broadcast failed: {e}");
                }
                drop(permit);
            });
        }
    } else {
        let mut sink = publisher(cli).await?;
        for seq in 0..messages {
            let text = client::payload(cli.target, seq, size, cli.topic.as_deref());
            sink.feed(Message::text(text)).await.map_err(|e| e.to_string())?;
        }
        sink.flush().await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(sink)
        });
    }
    let expected = n as u64 * messages;
    let last = client::await_count(&receivers.progress, expected, Duration::from_secs(5), "burst").await;
    let elapsed = last.duration_since(start);
    let (hist, total, _) = receivers.finish().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = client::rss_kib(cli.server_pid);

    let mut report = Report::new(if via_admin { "admin" } else { "burst" }, cli.target);
    report.add("clients", n);
    report.add("messages", messages);
    report.add("deliveries", total);
    report.add("lost", expected - total.min(expected));
    report.add("elapsed_s", format!("{:.3}", elapsed.as_secs_f64()));
    report.add(
        "deliveries_per_s",
        format!("{:.0}", total as f64 / elapsed.as_secs_f64()),
    );
    report.latency(&hist, &[("p50_ms", 0.5), ("p99_ms", 0.99)]);
    rss_rows(&mut report, before, idle_rss, n);
    if let (Some(i), Some(a)) = (idle_rss, after) {
        report.add("server_rss_after_burst_kib", a);
        report.add("rss_after_burst_vs_idle", format!("{:.2}", a as f64 / i as f64));
    }
    Ok(report)
}

/// Calls GetStats back to back for `duration`: (latency histogram in µs,
/// errors, deepest hub queue seen). It runs on a thread and runtime of its
/// own, so the receivers' work in this process does not delay its calls.
async fn get_stats_for(addr: &str, duration: Duration) -> Result<(Histogram<u64>, u64, u32), String> {
    let addr = addr.to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let result = match runtime {
            Ok(runtime) => runtime.block_on(async {
                let mut admin = wshub::admin::pb::admin_client::AdminClient::connect(format!("http://{addr}"))
                    .await
                    .map_err(|e| format!("admin connect: {e}"))?;
                Ok(get_stats_loop(&mut admin, duration).await)
            }),
            Err(e) => Err(e.to_string()),
        };
        let _ = tx.send(result);
    });
    rx.await.map_err(|e| e.to_string())?
}

async fn get_stats_loop(
    admin: &mut wshub::admin::pb::admin_client::AdminClient<tonic::transport::Channel>,
    duration: Duration,
) -> (Histogram<u64>, u64, u32) {
    let mut hist = Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds");
    let (mut errors, mut deepest) = (0, 0);
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let start = Instant::now();
        match admin.get_stats(wshub::admin::pb::GetStatsRequest {}).await {
            Ok(stats) => {
                let _ = hist.record(start.elapsed().as_micros().max(1) as u64);
                deepest = deepest.max(stats.into_inner().hub_queue_depth);
            }
            Err(e) => {
                errors += 1;
                eprintln!("GetStats failed: {e}");
            }
        }
    }
    (hist, errors, deepest)
}

async fn flood(cli: &Cli, n: usize, duration: Duration, size: usize) -> Result<Report, String> {
    let addr = cli.admin.clone().ok_or("the flood scenario needs --admin")?;
    let (conns, _) = connect_all(cli, n).await?;
    let (receivers, _sinks) = spawn_receivers(conns);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (quiet, quiet_errors, _) = get_stats_for(&addr, duration).await?;

    let mut sink = publisher(cli).await?;
    let stop = CancellationToken::new();
    let publishing = {
        let (stop, target) = (stop.clone(), cli.target);
        tokio::spawn(async move {
            let mut seq = 0;
            while !stop.is_cancelled() {
                for _ in 0..64 {
                    let text = client::payload(target, seq, size, None);
                    if sink.feed(Message::text(text)).await.is_err() {
                        return seq;
                    }
                    seq += 1;
                }
                if sink.flush().await.is_err() {
                    return seq;
                }
            }
            seq
        })
    };
    let start = Instant::now();
    let (flooded, flood_errors, deepest) = get_stats_for(&addr, duration).await?;
    stop.cancel();
    let elapsed = start.elapsed();
    let published = publishing.await.map_err(|e| e.to_string())?;
    let (_, deliveries, _) = receivers.finish().await;

    let mut report = Report::new("flood", cli.target);
    report.add("clients", n);
    report.add("published", published);
    report.add(
        "publishes_per_s",
        format!("{:.0}", published as f64 / elapsed.as_secs_f64()),
    );
    report.add("deliveries", deliveries);
    report.add("quiet_calls", quiet.len());
    report.add("quiet_errors", quiet_errors);
    for (name, q) in [("quiet_p50_ms", 0.5), ("quiet_p99_ms", 0.99)] {
        report.add(name, format!("{:.3}", quiet.value_at_quantile(q) as f64 / 1000.0));
    }
    report.add("flood_calls", flooded.len());
    report.add("flood_errors", flood_errors);
    for (name, q) in [("flood_p50_ms", 0.5), ("flood_p99_ms", 0.99), ("flood_max_ms", 1.0)] {
        report.add(name, format!("{:.3}", flooded.value_at_quantile(q) as f64 / 1000.0));
    }
    report.add("deepest_hub_queue", deepest);
    Ok(report)
}

/// What a steady run measured.
struct SteadyRun {
    clients: usize,
    expected: u64,
    total: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
    /// Per stalled client: (close code received, connection ended).
    stalled_closed: Vec<Option<(Option<u16>, bool)>>,
    rss_start: Option<u64>,
    rss_max: Option<u64>,
}

impl SteadyRun {
    fn fill(&self, report: &mut Report) {
        report.add("clients", self.clients);
        report.add("deliveries", self.total);
        report.add("lost", self.expected - self.total.min(self.expected));
        report.add(
            "deliveries_per_s",
            format!("{:.0}", self.total as f64 / self.elapsed.as_secs_f64()),
        );
        report.latency(&self.hist, &[("p50_ms", 0.5), ("p99_ms", 0.99), ("p999_ms", 0.999)]);
    }
}

async fn steady(cli: &Cli, args: &SteadyArgs, stalled: usize) -> Result<SteadyRun, String> {
    let SteadyArgs {
        clients: n,
        rate,
        duration,
        size,
    } = *args;
    let rss_start = client::rss_kib(cli.server_pid);
    let (mut conns, _) = connect_all(cli, n).await?;
    let stalled_conns: Vec<Ws> = conns.drain(..stalled).collect();
    let (receivers, _sinks) = spawn_receivers(conns);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut sink = publisher(cli).await?;
    let count = rate * duration.as_secs().max(1);
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1) as u32);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut rss_max = rss_start;
    for seq in 0..count {
        tick.tick().await;
        sink.send(Message::text(client::payload(
            cli.target,
            seq,
            size,
            cli.topic.as_deref(),
        )))
        .await
        .map_err(|e| e.to_string())?;
        if seq % rate.max(1) == 0 {
            rss_max = rss_max.max(client::rss_kib(cli.server_pid));
            eprintln!(
                "  steady: {}s, {} received",
                seq / rate.max(1),
                receivers.progress.load(Relaxed)
            );
        }
    }
    let expected = (n - stalled) as u64 * count;
    let last = client::await_count(&receivers.progress, expected, Duration::from_secs(5), "steady").await;
    rss_max = rss_max.max(client::rss_kib(cli.server_pid));
    let elapsed = last.duration_since(start);
    let (hist, total, _) = receivers.finish().await;
    // The stalled clients read at last, all at once: how did the server end them?
    let stop = CancellationToken::new();
    let readers: Vec<_> = stalled_conns
        .into_iter()
        .map(|ws| tokio::spawn(client::receive(ws.split().1, Arc::new(AtomicU64::new(0)), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.cancel();
    let mut stalled_closed = Vec::new();
    for reader in readers {
        stalled_closed.push(reader.await.ok().map(|r| (r.closed_with, r.ended)));
    }
    drop(sink);
    Ok(SteadyRun {
        clients: n,
        expected,
        total,
        elapsed,
        hist,
        stalled_closed,
        rss_start,
        rss_max,
    })
}

async fn stall(cli: &Cli, args: &SteadyArgs, fraction: f64, queue_bytes: usize) -> Result<Report, String> {
    let n = args.clients;
    let stalled = ((n as f64) * fraction).round() as usize;
    eprintln!("stall: phase 1, every client reading");
    let clean = steady(cli, args, 0).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("stall: phase 2, {stalled} clients never reading");
    let evictions = match (&cli.admin, cli.target) {
        (Some(addr), Target::Wshub) => Some(watch_evictions(addr).await?),
        _ => None,
    };
    let dirty = steady(cli, args, stalled).await?;

    let mut report = Report::new("stall", cli.target);
    report.add("clients", n);
    report.add("stalled", stalled);
    report.add(
        "healthy_p99_ms_no_stall",
        format!("{:.2}", clean.hist.value_at_quantile(0.99) as f64 / 1000.0),
    );
    report.add(
        "healthy_p99_ms_stalled",
        format!("{:.2}", dirty.hist.value_at_quantile(0.99) as f64 / 1000.0),
    );
    report.add("healthy_lost", dirty.expected - dirty.total.min(dirty.expected));
    // Read at last, a stalled client sees a close frame, the connection
    // dropped without one (the frame could not be written), or still open.
    let count = |f: &dyn Fn(Option<u16>, bool) -> bool| {
        dirty
            .stalled_closed
            .iter()
            .flatten()
            .filter(|(code, ended)| f(*code, *ended))
            .count()
    };
    report.add("stalled_closed_4008", count(&|code, _| code == Some(4008)));
    report.add(
        "stalled_closed_other",
        count(&|code, _| code.is_some_and(|c| c != 4008)),
    );
    report.add(
        "stalled_dropped_no_frame",
        count(&|code, ended| code.is_none() && ended),
    );
    report.add("stalled_still_open", count(&|code, ended| code.is_none() && !ended));
    if let Some(evictions) = evictions {
        let mut times: Vec<Duration> = evictions.lock().map(|t| t.clone()).unwrap_or_default();
        times.sort();
        // Seconds from the start of phase 2 (connections included).
        report.add("evicted_events", times.len());
        if let (Some(first), Some(last)) = (times.first(), times.last()) {
            report.add("eviction_first_s", format!("{:.2}", first.as_secs_f64()));
            report.add("eviction_last_s", format!("{:.2}", last.as_secs_f64()));
        }
    }
    if let (Some(start), Some(max)) = (dirty.rss_start, dirty.rss_max) {
        report.add("server_rss_growth_kib", max.saturating_sub(start));
        report.add("rss_growth_bound_kib", stalled * queue_bytes / 1024);
    }
    Ok(report)
}

/// Times of EVICTED events, measured from when the watch started.
async fn watch_evictions(addr: &str) -> Result<Arc<std::sync::Mutex<Vec<Duration>>>, String> {
    use wshub::admin::pb;
    let mut admin = pb::admin_client::AdminClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| format!("admin connect: {e}"))?;
    let request = pb::WatchEventsRequest {
        kinds: vec![pb::EventKind::Evicted as i32],
    };
    let mut events = admin
        .watch_events(request)
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let times = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = times.clone();
    let start = Instant::now();
    tokio::spawn(async move {
        while let Ok(Some(_)) = events.message().await {
            if let Ok(mut t) = sink.lock() {
                t.push(start.elapsed());
            }
        }
    });
    Ok(times)
}
