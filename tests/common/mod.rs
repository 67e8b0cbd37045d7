//! Test harness: the real server on port-0 listeners, real WebSocket and
//! gRPC clients, and helpers that await events instead of sleeping.
#![allow(dead_code)]

pub mod history;
pub mod pki;
pub mod raw;
pub mod redis;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tonic::transport::Channel;
use wshub::admin::pb;
use wshub::admin::pb::admin_client::AdminClient;
use wshub::{Config, Listeners};

/// How long any single awaited event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub ws: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), wshub::Error>>>,
}

impl TestServer {
    pub async fn spawn() -> TestServer {
        Self::with(|_| {}).await
    }

    /// Starts the server with the defaults changed by `configure`.
    pub async fn with(configure: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::ephemeral();
        configure(&mut config);
        let listeners = Listeners::bind(&config).await.expect("bind");
        let ws = listeners.ws.local_addr().unwrap();
        let admin = listeners.admin.local_addr().unwrap();
        let metrics = listeners.metrics.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(wshub::run(listeners, config, async {
            let _ = rx.await;
        }));
        TestServer {
            ws,
            admin,
            metrics,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.ws)
    }

    pub async fn client(&self) -> WsClient {
        WsClient::connect(&self.url()).await
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::connect(format!("http://{}", self.admin))
            .await
            .expect("admin connect")
    }

    /// Opens a WatchEvents stream (empty `kinds`: every kind).
    pub async fn watch(&self, kinds: &[pb::EventKind]) -> tonic::Streaming<pb::Event> {
        let request = pb::WatchEventsRequest {
            kinds: kinds.iter().map(|k| *k as i32).collect(),
        };
        self.admin()
            .await
            .watch_events(request)
            .await
            .expect("watch")
            .into_inner()
    }

    pub async fn stats(&self) -> pb::Stats {
        self.admin()
            .await
            .get_stats(pb::GetStatsRequest {})
            .await
            .expect("stats")
            .into_inner()
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts down and asserts that `run` returns Ok in time.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        let task = self.task.take().unwrap();
        let result = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("run returns in time");
        result.expect("run task").expect("run ok");
    }

    /// Sends a raw HTTP request on a listener; returns the status code
    /// (read from the status line: a 101 leaves the connection open).
    pub async fn http_status(addr: SocketAddr, request: &str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        while !response.windows(2).any(|w| w == b"\r\n") {
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("response")
                .unwrap();
            if n == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&response);
        text.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {text:?}"))
    }

    /// GET `path` on the metrics listener: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        get(self.metrics, path).await
    }

    /// The value of one series on the metrics listener.
    pub async fn metric(&self, series: &str) -> f64 {
        metric(self.metrics, series).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

pub struct WsClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub id: String,
    pub welcome: Value,
}

impl WsClient {
    /// Connects and reads the welcome frame.
    pub async fn connect(url: &str) -> WsClient {
        match Self::try_connect(url).await {
            Ok(client) => client,
            Err((status, body)) => panic!("ws connect refused: {status} {body}"),
        }
    }

    /// Connects with `request` (a URL, or a request with headers); a refused
    /// upgrade is `Err((status, body))`.
    pub async fn try_connect(
        request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
    ) -> Result<WsClient, (u16, String)> {
        use tokio_tungstenite::tungstenite::Error;
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(Self::welcomed(ws).await),
            Err(Error::Http(response)) => Err((
                response.status().as_u16(),
                String::from_utf8_lossy(response.body().as_deref().unwrap_or(b"")).into_owned(),
            )),
            Err(e) => panic!("ws connect failed: {e}"),
        }
    }

    /// Reads the welcome frame on an upgraded connection.
    pub async fn welcomed(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> WsClient {
        let mut client = WsClient {
            ws,
            id: String::new(),
            welcome: Value::Null,
        };
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], "welcome", "first frame is the welcome: {welcome}");
        client.id = welcome["client_id"].as_str().expect("client_id").to_string();
        client.welcome = welcome;
        client
    }

    pub async fn send(&mut self, value: Value) {
        self.ws.send(Message::text(value.to_string())).await.expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// The next JSON text frame (control frames skipped).
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time");
            match message.expect("stream open").expect("frame ok") {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next JSON text frame, or the close code if the server closes first.
    pub async fn next_or_close(&mut self) -> Result<Value, u16> {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time");
            match message.expect("stream open").expect("frame ok") {
                Message::Text(text) => return Ok(serde_json::from_str(&text).expect("JSON frame")),
                Message::Close(frame) => return Err(frame.map_or(1005, |f| u16::from(f.code))),
                _ => continue,
            }
        }
    }

    /// Sends a request and returns the next frame (its answer, when nothing else is in flight).
    pub async fn request(&mut self, value: Value) -> Value {
        self.send(value).await;
        self.recv().await
    }

    pub async fn subscribe(&mut self, topic: &str) {
        let answer = self.request(json!({"type":"subscribe","topic":topic,"id":"sub"})).await;
        assert_eq!(answer, json!({"type":"ack","id":"sub"}));
    }

    /// Reads until the close frame, skipping text; returns (code, reason).
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next()).await.expect("close in time");
            match message {
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return (u16::from(code), reason.to_string())
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("error before close frame: {e}"),
                None => panic!("stream ended without a close frame"),
            }
        }
    }

    /// A client subscribed to `topic` that then never reads again, on a
    /// socket with a small receive buffer, so it fills quickly: (client, id).
    pub async fn stalled(server: SocketAddr, topic: &str) -> (WsClient, String) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(server).await.unwrap();
        let url = format!("ws://{server}/ws");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
        let mut client = WsClient {
            ws,
            id: String::new(),
            welcome: Value::Null,
        };
        let welcome = client.recv().await;
        client.id = welcome["client_id"].as_str().unwrap().to_string();
        client.subscribe(topic).await;
        let id = client.id.clone();
        (client, id)
    }

    /// Round-trips a ping: proves the connection is open and everything
    /// sent before it has been answered.
    pub async fn ping(&mut self) {
        let answer = self.request(json!({"type":"ping","id":"p"})).await;
        assert_eq!(answer, json!({"type":"pong","id":"p"}));
    }
}

/// The value of one series (`name{labels}` as exposed) on a metrics listener.
pub async fn metric(metrics: SocketAddr, series: &str) -> f64 {
    let (status, body) = get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(k, _)| *k == series).map(|(_, v)| v))
        .unwrap_or_else(|| panic!("{series} not exported"))
        .parse()
        .unwrap()
}

/// GET `path` on an HTTP listener: (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A plain gRPC channel to the admin listener (for health and reflection clients).
pub async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("grpc connect")
}

/// The Python that runs the tests' Python clients: scripts/test makes a
/// virtual environment in target/venv (grpcio, websockets) and names its
/// interpreter in WSHUB_TEST_PYTHON.
pub fn python() -> String {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/venv/bin/python");
    std::env::var("WSHUB_TEST_PYTHON").unwrap_or_else(|_| {
        let found = std::path::Path::new(venv).exists();
        if found { venv } else { "python3" }.to_string()
    })
}

/// The real `wshub` binary on port-0 listeners, with extra flags.
pub struct Binary {
    pub child: tokio::process::Child,
    pub ws: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    /// The log lines (stderr) after the "listening" line, as they come.
    pub log: tokio::sync::watch::Receiver<Vec<String>>,
}

impl Binary {
    pub async fn spawn(args: &[&str]) -> Binary {
        Self::spawn_with_files(None, args).await
    }

    /// With the process's open-file limit (soft and hard) set to `files`.
    pub async fn spawn_with_files(files: Option<u64>, args: &[&str]) -> Binary {
        use std::process::Stdio;
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut command = match files {
            None => tokio::process::Command::new(env!("CARGO_BIN_EXE_wshub")),
            Some(n) => {
                let mut sh = tokio::process::Command::new("sh");
                sh.args([
                    "-c",
                    &format!("ulimit -n {n} && exec \"$0\" \"$@\""),
                    env!("CARGO_BIN_EXE_wshub"),
                ]);
                sh
            }
        };
        let mut child = command
            .args([
                "--ws-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("WSHUB_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // The "listening" log line names the bound addresses.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = loop {
            let line = tokio::time::timeout(WAIT, lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .expect("a log line");
            if line.contains("listening") {
                break line;
            }
        };
        // A text line (`ws=ADDR ...`) or, with --log-format json, an object.
        let json: Option<Value> = serde_json::from_str(&line).ok();
        let addr = |key: &str| -> SocketAddr {
            let text = match &json {
                Some(object) => object[key].as_str().map(str::to_string),
                None => line
                    .split(&format!(" {key}="))
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_string),
            };
            text.and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("{key} address in {line:?}"))
        };
        let (ws, admin, metrics) = (addr("ws"), addr("admin"), addr("metrics"));
        let (log_tx, log) = tokio::sync::watch::channel(Vec::new());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                log_tx.send_modify(|log| log.push(line));
            }
        });
        Binary {
            child,
            ws,
            admin,
            metrics,
            log,
        }
    }

    /// Waits for a log line containing `text`; returns it.
    pub async fn log_line(&self, text: &str) -> String {
        let mut log = self.log.clone();
        let found = tokio::time::timeout(WAIT, log.wait_for(|lines| lines.iter().any(|l| l.contains(text))))
            .await
            .unwrap_or_else(|_| panic!("no log line with {text:?} in {:?}", self.log.borrow()))
            .expect("log open");
        found.iter().find(|l| l.contains(text)).unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.ws)
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::connect(format!("http://{}", self.admin))
            .await
            .expect("admin connect")
    }

    /// Resident memory of the process, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    pub async fn sigterm(&self) {
        self.signal("TERM").await;
    }

    /// Sends the signal named `name` (`TERM`, `HUP`) to the process.
    pub async fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let kill = tokio::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .await
            .unwrap();
        assert!(kill.success());
    }
}

/// A WatchEvents stream on a channel with a small HTTP/2 window, so the
/// transport buffers little for a watcher that does not read.
pub async fn small_window_watch(admin: SocketAddr) -> tonic::Streaming<pb::Event> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{admin}"))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    AdminClient::new(channel)
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
}

/// Waits for the event of `kind` about client `id`.
pub async fn event_for(events: &mut tonic::Streaming<pb::Event>, kind: pb::EventKind, id: &str) -> pb::Event {
    loop {
        let event = tokio::time::timeout(WAIT, events.message())
            .await
            .expect("an event in time")
            .expect("stream ok")
            .expect("stream open");
        if event.kind == kind as i32 && event.client_id == id {
            return event;
        }
    }
}
