//! Observability end to end: a scripted workload against the real server,
//! then the Prometheus text it exports, checked by value, by promtool, and
//! against every metric the Grafana dashboard and the alert rules use.
//!
//! The recorder is global to this test process, so these tests take turns.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::Stdio;

use common::{TestServer, WAIT};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use wshub::admin::pb;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Series → value, from the exposition text.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            l.rsplit_once(' ')
                .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(f64::NAN)))
        })
        .collect()
}

async fn scrape(server: &TestServer) -> (String, HashMap<String, f64>) {
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let values = parse(&body);
    (body, values)
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    after
        .get(series)
        .copied()
        .unwrap_or_else(|| panic!("{series} not exported"))
        - before.get(series).copied().unwrap_or(0.0)
}

async fn disconnected(events: &mut tonic::Streaming<pb::Event>, id: &str) -> pb::Event {
    loop {
        let e = tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if e.kind == pb::EventKind::Disconnected as i32 && e.client_id == id {
            return e;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_moves_the_metrics_and_every_dashboard_metric_exists() {
    let _turn = SERIAL.lock().await;
    let server = TestServer::with(|c| {
        c.client.send_queue_len = 8;
        c.client.send_queue_bytes = 128 * 1024;
    })
    .await;
    let mut admin = server.admin().await;
    let mut events = server.watch(&[]).await;
    let (_, before) = scrape(&server).await;

    // One refused HTTP request, three clients, two topic publishes, one bad request.
    let get = "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(TestServer::http_status(server.ws, get).await, 404);
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut c = server.client().await;
    a.subscribe("t").await;
    b.subscribe("t").await;
    let mut received_bytes = 0;
    for i in 0..2 {
        let text = json!({"type":"publish","topic":"t","data":i,"id":i}).to_string();
        received_bytes += text.len();
        c.send_text(&text).await;
        assert_eq!(c.recv().await["type"], "ack");
        assert_eq!(a.recv().await["data"], i);
        assert_eq!(b.recv().await["data"], i);
    }
    c.send_text("nope").await;
    assert_eq!(c.recv().await["code"], "bad_request");
    received_bytes += "nope".len() + 2 * json!({"type":"subscribe","topic":"t","id":"sub"}).to_string().len();
    let broadcast = pb::BroadcastRequest {
        data: "\"hi\"".into(),
        ..Default::default()
    };
    assert_eq!(admin.broadcast(broadcast).await.unwrap().into_inner().recipients, 3);
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(client.recv().await["data"], "hi");
    }
    let (_, mid) = scrape(&server).await;

    // A kick, a slow consumer evicted, an RPC error.
    let kick = pb::KickClientsRequest {
        target: Some(pb::kick_clients_request::Target::ClientId(a.id.clone())),
        code: 4000,
        reason: String::new(),
    };
    admin.kick_clients(kick).await.unwrap();
    a.closed().await;
    disconnected(&mut events, &a.id).await;
    let mut stalled = server.client().await;
    stalled.subscribe("flood").await;
    let flood = format!("\"{}\"", "f".repeat(60_000));
    let mut admin_broadcasts = 1;
    loop {
        let request = pb::BroadcastRequest {
            topic: "flood".into(),
            data: flood.clone(),
            ..Default::default()
        };
        admin_broadcasts += 1;
        if admin.broadcast(request).await.unwrap().into_inner().dropped == 1 {
            break;
        }
    }
    assert_eq!(disconnected(&mut events, &stalled.id).await.reason, "slow_consumer");
    let missing = admin
        .get_client(pb::GetClientRequest {
            client_id: "c-999999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let (text, after) = scrape(&server).await;

    // Phase one, exact: everything was read, so every delivery was written.
    let d = |series: &str| delta(&before, &mid, series);
    assert_eq!(d("wshub_handshake_failures_total{reason=\"not_found\"}"), 1.0);
    assert_eq!(d("wshub_connections_total"), 3.0);
    assert_eq!(d("wshub_messages_received_total"), 5.0);
    assert_eq!(d("wshub_bytes_received_total"), received_bytes as f64);
    // 3 welcomes, 2 subscribe acks, 2 publish acks, 2x2 topic messages, 1 error, 3 admin messages.
    assert_eq!(d("wshub_messages_sent_total"), 15.0);
    assert_eq!(d("wshub_broadcasts_total{source=\"client\"}"), 2.0);
    assert_eq!(d("wshub_broadcasts_total{source=\"admin\"}"), 1.0);
    assert_eq!(d("wshub_broadcast_recipients_sum"), 7.0);
    assert_eq!(d("wshub_client_errors_total{code=\"bad_request\"}"), 1.0);

    // Phase two.
    let d = |series: &str| delta(&mid, &after, series);
    assert_eq!(d("wshub_disconnects_total{reason=\"kicked\"}"), 1.0);
    assert_eq!(d("wshub_disconnects_total{reason=\"slow_consumer\"}"), 1.0);
    // The broadcast that did not fit, plus whatever was still queued for the
    // evicted client: eviction discards its queue, and counts what it discards.
    let dropped = d("wshub_dropped_messages_total{reason=\"slow_consumer\"}");
    assert!(
        (1.0..(admin_broadcasts - 1) as f64).contains(&dropped),
        "dropped {dropped}"
    );
    assert_eq!(
        d("wshub_broadcasts_total{source=\"admin\"}"),
        (admin_broadcasts - 1) as f64
    );
    assert_eq!(
        d("wshub_admin_requests_total{method=\"GetClient\",code=\"NOT_FOUND\"}"),
        1.0
    );
    assert!(d("wshub_admin_request_duration_seconds_count{method=\"Broadcast\"}") >= 1.0);
    assert_eq!(after["wshub_clients"], 2.0);
    assert_eq!(after["wshub_topics"], 1.0);
    assert_eq!(after["wshub_client_queue_capacity"], 8.0);
    assert!(after["process_resident_memory_bytes"] > 0.0);

    promtool(&["check", "metrics"], Some(&text)).await;
    let exported = exported_names(&text);
    for file in ["grafana/dashboards/wshub.json", "grafana/alerts/wshub.rules.yml"] {
        let used = used_metrics(file);
        assert!(!used.is_empty(), "{file} uses no metrics?");
        for name in used {
            // `up` is made by Prometheus itself for every scrape target; the
            // backplane's series exist on nodes with --backplane, the
            // history's on nodes with --history-size (checked in the
            // real-Prometheus test, which runs one of each).
            assert!(
                name == "up"
                    || name.starts_with("wshub_backplane_")
                    || name.starts_with("wshub_history_")
                    || exported.contains(&name),
                "{file} uses {name}, which wshub does not export"
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_pass_promtool() {
    promtool(&["check", "rules", "grafana/alerts/wshub.rules.yml"], None).await;
    // Each rule fires in its scenario, within its stated time, and none on an idle node.
    promtool(&["test", "rules", "grafana/alerts/wshub.rules.test.yml"], None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_during_shutdown() {
    let _turn = SERIAL.lock().await;
    let mut server = TestServer::spawn().await;
    assert_eq!(server.get("/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(server.get("/readyz").await.0, 200);
    let mut client = server.client().await;
    server.begin_shutdown();
    // The close frame arrives once shutdown has begun; without our reply the
    // server lingers, and monitoring still answers meanwhile.
    assert_eq!(client.closed().await.0, 1001);
    assert_eq!(server.get("/readyz").await.0, 503);
    assert_eq!(server.get("/healthz").await.0, 200);
    server.stop().await;
}

async fn promtool(args: &[&str], stdin: Option<&str>) {
    let mut child = tokio::process::Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test installs Debian's prometheus package)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every metric name the exposition text has a sample for.
fn exported_names(text: &str) -> BTreeSet<String> {
    parse(text)
        .keys()
        .map(|series| series.split('{').next().unwrap().to_string())
        .collect()
}

/// Every metric name the PromQL expressions in `file` select.
fn used_metrics(file: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in expressions(file) {
        let expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".*");
        let ast = promql_parser::parser::parse(&expr).unwrap_or_else(|e| panic!("{file}: {expr}: {e}"));
        let mut visitor = Names(&mut names);
        promql_parser::util::walk_expr(&mut visitor, &ast).unwrap();
    }
    names
}

/// Every PromQL expression in a dashboard (`expr` fields) or a rules file.
fn expressions(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let exprs: Vec<String> = if file.ends_with(".json") {
        let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut exprs = Vec::new();
        collect_exprs(&dashboard, &mut exprs);
        exprs
    } else {
        // The rules file's `expr:` values, single-line or block scalars.
        let mut exprs = Vec::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            let Some(rest) = line.trim_start().strip_prefix("expr:") else {
                continue;
            };
            if rest.trim() == "|" {
                // The block is every following line indented deeper than `expr:`.
                let indent = line.len() - line.trim_start().len();
                let mut block = String::new();
                while lines.peek().is_some_and(|l| l.len() - l.trim_start().len() > indent) {
                    block.push_str(lines.next().unwrap());
                    block.push('\n');
                }
                exprs.push(block);
            } else {
                exprs.push(rest.trim().to_string());
            }
        }
        exprs
    };
    assert!(!exprs.is_empty(), "{file} has no expressions");
    exprs
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

struct Names<'a>(&'a mut BTreeSet<String>);

impl promql_parser::util::ExprVisitor for Names<'_> {
    type Error = ();
    fn pre_visit(&mut self, expr: &promql_parser::parser::Expr) -> Result<bool, ()> {
        use promql_parser::parser::Expr;
        let selector = match expr {
            Expr::VectorSelector(vs) => Some(vs),
            Expr::MatrixSelector(ms) => Some(&ms.vs),
            _ => None,
        };
        if let Some(name) = selector.and_then(|vs| vs.name.clone()) {
            self.0.insert(name);
        }
        Ok(true)
    }
}

/// This process's CPU seconds from /proc (user + system, at 100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_seconds_keep_their_fractions() {
    let _turn = SERIAL.lock().await;
    let server = TestServer::spawn().await;
    // Spin until the process has used a clearly fractional number of seconds,
    // so a value cut to whole seconds would fall below it.
    let before = loop {
        let now = cpu_seconds();
        if (0.3..0.8).contains(&now.fract()) {
            break now;
        }
        std::hint::black_box((0..10_000u64).sum::<u64>());
    };
    let (_, text) = server.get("/metrics").await;
    let after = cpu_seconds();
    let exported = parse(&text)["process_cpu_seconds_total"];
    assert!(
        before - 0.011 <= exported && exported <= after + 0.011,
        "exported {exported}, /proc said {before} before and {after} after"
    );
    assert!(
        text.contains("# TYPE process_cpu_seconds_total counter"),
        "still a counter"
    );
    server.stop().await;
}

/// A real Prometheus (Debian's package) scraping a live node every second.
struct Prometheus {
    /// Killed when dropped.
    _child: tokio::process::Child,
    url: String,
    _dir: TempDir,
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Prometheus {
    async fn start(targets: &[std::net::SocketAddr]) -> Prometheus {
        let targets = targets
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let dir = std::env::temp_dir().join(format!("wshub-prometheus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rules = std::fs::canonicalize("grafana/alerts/wshub.rules.yml").unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: wshub\n    static_configs:\n      - targets: [{targets}]\n",
            rules.display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        // A free port: bound, read, released (Prometheus cannot take port 0 and say which).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus is installed (scripts/test installs Debian's prometheus package)");
        let url = format!("http://127.0.0.1:{port}");
        let prometheus = Prometheus {
            _child: child,
            url,
            _dir: TempDir(dir),
        };
        let ready = async {
            while prometheus.get("/-/ready").await.is_none() {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), ready)
            .await
            .expect("prometheus ready");
        prometheus
    }

    /// GET a path of Prometheus's HTTP API: the body, if it answered 200.
    async fn get(&self, path_and_query: &str) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let addr = self.url.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&response).to_string();
        let (head, body) = text.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        // Chunked bodies: Prometheus's API answers are small; join the chunks.
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            let mut out = String::new();
            let mut rest = body;
            while let Some((size, tail)) = rest.split_once("\r\n") {
                let n = usize::from_str_radix(size.trim(), 16).ok()?;
                if n == 0 {
                    break;
                }
                out.push_str(tail.get(..n)?);
                rest = tail.get(n + 2..)?;
            }
            return Some(out);
        }
        Some(body.to_string())
    }

    /// Evaluates `expr` now: the result vector.
    async fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let encoded: String = expr
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let body = self
            .get(&format!("/api/v1/query?query={encoded}"))
            .await
            .unwrap_or_else(|| panic!("Prometheus refused {expr}"));
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Alert name → state ("pending" or "firing").
    async fn alerts(&self) -> HashMap<String, String> {
        let body = self.get("/api/v1/alerts").await.expect("alerts");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        answer["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let name = a["labels"]["alertname"].as_str().unwrap_or("").to_string();
                (name, a["state"].as_str().unwrap_or("").to_string())
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_sees_every_panel_and_the_alerts_fire() {
    let _turn = SERIAL.lock().await;
    // A node with a backplane, so the Backplane row has data too.
    let redis = common::redis::Redis::start().await;
    let url = redis.url();
    let server = common::Binary::spawn(&[
        "--send-queue-len",
        "4",
        "--send-queue-bytes",
        "64KiB",
        "--backplane",
        &url,
        "--backplane-heartbeat",
        "200ms",
    ])
    .await;
    server.log_line("backplane up").await;
    // And a node with history (one node's alone: not with a backplane), so
    // the History row has data.
    let history = common::Binary::spawn(&["--history-size", "10"]).await;
    let mut exported = std::collections::HashSet::new();
    for node in [&server, &history] {
        let (_, text) = common::get(node.metrics, "/metrics").await;
        exported.extend(exported_names(&text));
    }
    for file in ["grafana/dashboards/wshub.json", "grafana/alerts/wshub.rules.yml"] {
        for name in used_metrics(file) {
            assert!(
                name == "up" || exported.contains(&name),
                "{file} uses {name}, which neither a node with a backplane nor one with history exports"
            );
        }
    }
    let prometheus = Prometheus::start(&[server.metrics, history.metrics]).await;
    let mut admin = server.admin().await;
    let up = || async { prometheus.query("up{job=\"wshub\"} == 1").await.len() };
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while up().await < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the node is scraped");

    // The scenario: a refused handshake, an admin call refused, client
    // traffic, and a burst that evicts 60 clients that never read.
    let get = "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(TestServer::http_status(server.ws, get).await, 404);
    let missing = pb::GetClientRequest {
        client_id: "c-999999".into(),
    };
    assert!(admin.get_client(missing).await.is_err());
    let mut reader = common::WsClient::connect(&server.url()).await;
    reader.subscribe("t").await;
    reader.send(json!({"type":"publish","topic":"t","data":1})).await;
    reader.recv().await;
    let mut stalled = Vec::new();
    for _ in 0..60 {
        stalled.push(common::WsClient::stalled(server.ws, "burst").await.0);
    }
    // Broadcast until every stalled client is evicted: the kernel's socket
    // buffers take a few MB each first.
    let data = format!("\"{}\"", "b".repeat(60_000));
    let burst = async {
        loop {
            let request = pb::BroadcastRequest {
                topic: "burst".into(),
                data: data.clone(),
                ..Default::default()
            };
            if admin.broadcast(request).await.unwrap().into_inner().recipients == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), burst)
        .await
        .expect("every stalled client evicted");
    let stats = admin.get_stats(pb::GetStatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.slow_consumer_evictions, 60);

    // Let Prometheus scrape the aftermath and evaluate the rules.
    let fired = async {
        loop {
            let alerts = prometheus.alerts().await;
            if alerts.get("WshubMassEviction").map(String::as_str) == Some("firing")
                && alerts.contains_key("WshubClientQueueNearLimit")
            {
                break alerts;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    };
    let alerts = tokio::time::timeout(std::time::Duration::from_secs(30), fired)
        .await
        .expect("the mass eviction fires and a queue near its limit is pending");
    for quiet in [
        "WshubInstanceDown",
        "WshubHubQueueNearCapacity",
        "WshubAdminErrors",
        "WshubBackplaneDown",
        "WshubBackplaneDropping",
        "WshubBackplaneSubscriptionLost",
        "WshubRecoveriesFailing",
    ] {
        assert!(!alerts.contains_key(quiet), "{quiet} should not be active: {alerts:?}");
    }

    // Every dashboard expression, with Grafana's variables, returns data
    // and no NaN (traffic flowed through every panel's metrics).
    for expr in expressions("grafana/dashboards/wshub.json") {
        let expr = expr.replace("$__rate_interval", "1m").replace("$instance", ".*");
        let result = prometheus.query(&expr).await;
        assert!(!result.is_empty(), "no data for the panel query {expr}");
        for series in &result {
            let value = series["value"][1].as_str().unwrap_or("");
            assert_ne!(value, "NaN", "NaN for {expr}: {series}");
        }
    }
    // Every rule expression is valid PromQL to a real Prometheus.
    for expr in expressions("grafana/alerts/wshub.rules.yml") {
        prometheus.query(&expr).await;
    }
    drop(stalled);
    drop(prometheus);
    server.sigterm().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_is_served_at_the_root_and_is_not_a_failed_handshake() {
    let _turn = SERIAL.lock().await;
    let server = TestServer::spawn().await;
    let failures = "wshub_handshake_failures_total{reason=\"bad_request\"}";
    let not_found = "wshub_handshake_failures_total{reason=\"not_found\"}";
    let before = (server.metric(failures).await, server.metric(not_found).await);
    let (status, page) = common::get(server.ws, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>wshub demo</title>") && page.contains(r#"<script src="/demo.js">"#));
    let (status, script) = common::get(server.ws, "/demo.js").await;
    assert_eq!(status, 200);
    assert!(script.contains("new WebSocket(url)"), "the page's client");
    let head = "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(TestServer::http_status(server.ws, head).await, 200);
    let post = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(TestServer::http_status(server.ws, post).await, 405);
    // Pages are not refusals: only the POST (405) counted, as bad_request.
    let after = (server.metric(failures).await, server.metric(not_found).await);
    assert_eq!((after.0 - before.0, after.1 - before.1), (1.0, 0.0));
    server.client().await.ping().await;
    server.stop().await;
}
