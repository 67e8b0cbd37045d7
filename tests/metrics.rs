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
            // `up` is made by Prometheus itself for every scrape target.
            assert!(
                name == "up" || exported.contains(&name),
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
    let mut names = BTreeSet::new();
    for expr in exprs {
        let expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".*");
        let ast = promql_parser::parser::parse(&expr).unwrap_or_else(|e| panic!("{file}: {expr}: {e}"));
        let mut visitor = Names(&mut names);
        promql_parser::util::walk_expr(&mut visitor, &ast).unwrap();
    }
    names
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
