//! A real `redis-server` for the backplane tests: each test starts its own
//! on a free port and it is killed when dropped.

use std::time::Duration;

use tokio::process::{Child, Command};

use super::WAIT;

pub struct Redis {
    pub port: u16,
    /// `requirepass`, if any.
    pub password: Option<String>,
    child: Option<Child>,
}

impl Redis {
    /// Starts a server on a free port and waits until it answers PING.
    pub async fn start() -> Redis {
        Self::start_with(None).await
    }

    /// A free port, not started yet: for a node that must come up without Redis.
    pub fn free_port() -> u16 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    }

    /// A server (not yet started) that will run on `port`.
    pub fn on(port: u16, password: Option<&str>) -> Redis {
        Redis {
            port,
            password: password.map(str::to_string),
            child: None,
        }
    }

    /// Starts a server requiring `password` (if any) on a free port.
    pub async fn start_with(password: Option<&str>) -> Redis {
        // A port the kernel just gave out and took back: free unless another
        // process takes it in between, which a retry covers.
        for _ in 0..5 {
            let mut redis = Redis::on(Self::free_port(), password);
            if redis.restart().await {
                return redis;
            }
        }
        panic!("could not start redis-server (is it installed? scripts/test installs it)");
    }

    /// The URL a node is given, with the password if there is one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// (Re)starts the server on the same port; true once it answers.
    pub async fn restart(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if self.cli(&["PING"]).await.as_deref() == Some("PONG") {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Sends a signal (`STOP`, `CONT`) to the server.
    pub async fn signal(&self, name: &str) {
        let pid = self.child.as_ref().and_then(|c| c.id()).expect("running").to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }

    /// One command through redis-cli; its output, trimmed (`None`: failed).
    pub async fn cli(&self, args: &[&str]) -> Option<String> {
        let mut command = Command::new("redis-cli");
        command.args(["-p", &self.port.to_string()]);
        if let Some(password) = &self.password {
            command.args(["--no-auth-warning", "-a", password]);
        }
        let out = command.args(args).output().await.ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }

    /// Subscribers (nodes) Redis has for a topic's channel.
    pub async fn topic_subscribers(&self, topic: &str) -> u64 {
        let out = self
            .cli(&["PUBSUB", "NUMSUB", &format!("wshub:topic:{{{topic}}}")])
            .await
            .unwrap_or_default();
        out.lines().nth(1).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    }
}

/// Polls `check` every 20 ms until it holds, for at most `limit`: for
/// states with no event to await (another process's view of Redis).
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP proxy in front of Redis that can silence the subscriptions passing
/// through it: the connection stays open, commands still reach Redis, but
/// nothing Redis sends back on it arrives any more (a silent stall). It can
/// also hold everything Redis answers for a while (a slow link), or lose one
/// pub/sub message on its way to the node.
pub struct StallProxy {
    pub port: u16,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::sync::Arc<Proxied>>>>,
    /// A marker: the next pub/sub message that contains it is lost.
    lose: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Proxied {
    subscriber: std::sync::atomic::AtomicBool,
    silenced: std::sync::atomic::AtomicBool,
}

impl StallProxy {
    pub async fn start(upstream: u16) -> StallProxy {
        Self::slow(upstream, Duration::ZERO).await
    }

    /// A proxy that delivers what Redis sends `delay` after it came: a link
    /// whose round trip is `delay` longer, with no less bandwidth.
    pub async fn slow(upstream: u16, delay: Duration) -> StallProxy {
        use std::sync::atomic::Ordering::Relaxed;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let all = conns.clone();
        let lose = std::sync::Arc::new(std::sync::Mutex::new(None::<Vec<u8>>));
        let losing = lose.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let conn = std::sync::Arc::new(Proxied::default());
                all.lock().unwrap().push(conn.clone());
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let up = conn.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 16384];
                    while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                        if buf[..n].windows(9).any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE")) {
                            up.subscriber.store(true, Relaxed);
                        }
                        if server_tx.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let (held, mut due) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
                let losing = losing.clone();
                tokio::spawn(async move {
                    // What Redis sends is cut into whole RESP values, so one
                    // pub/sub message can be left out without breaking the rest.
                    let mut buf = vec![0; 16384];
                    let mut pending = Vec::new();
                    while let Ok(n @ 1..) = server_rx.read(&mut buf).await {
                        if conn.silenced.load(Relaxed) {
                            continue;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        let mut out = Vec::with_capacity(pending.len());
                        let mut at = 0;
                        while let Some(len) = resp_value_len(&pending[at..]) {
                            let value = &pending[at..at + len];
                            at += len;
                            if is_lost(value, &losing) {
                                continue;
                            }
                            out.extend_from_slice(value);
                        }
                        pending.drain(..at);
                        if held.send((tokio::time::Instant::now() + delay, out)).is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Some((at, bytes)) = due.recv().await {
                        tokio::time::sleep_until(at).await;
                        if client_tx.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        StallProxy {
            port,
            conns,
            lose,
            task,
        }
    }

    /// The next pub/sub message (to any node through this proxy) whose
    /// bytes contain `marker` is lost; replies to commands are never lost.
    pub fn lose_next_message_with(&self, marker: &str) {
        *self.lose.lock().unwrap() = Some(marker.as_bytes().to_vec());
    }

    /// Whether the message armed by `lose_next_message_with` has been lost.
    pub fn lost(&self) -> bool {
        self.lose.lock().unwrap().is_none()
    }

    /// Silences every subscription open now; later ones pass.
    pub fn silence_subscriptions(&self) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        let conns = self.conns.lock().unwrap();
        let subscribers: Vec<_> = conns.iter().filter(|c| c.subscriber.load(Relaxed)).collect();
        for c in &subscribers {
            c.silenced.store(true, Relaxed);
        }
        subscribers.len()
    }
}

/// Whether `value` is the pub/sub message armed to be lost (and disarms it).
fn is_lost(value: &[u8], lose: &std::sync::Mutex<Option<Vec<u8>>>) -> bool {
    let mut lose = lose.lock().unwrap();
    let Some(marker) = lose.as_deref() else {
        return false;
    };
    let pushed = [&b"*3\r\n$7\r\nmessage\r\n"[..], b">3\r\n$7\r\nmessage\r\n"]
        .iter()
        .any(|head| value.starts_with(head));
    if pushed && value.windows(marker.len()).any(|w| w == marker) {
        *lose = None;
        return true;
    }
    false
}

/// The length of the first whole RESP (2 or 3) value in `buf`, if it is all
/// there.
fn resp_value_len(buf: &[u8]) -> Option<usize> {
    let line = buf.windows(2).position(|w| w == b"\r\n")?;
    let head = line + 2;
    let number = || std::str::from_utf8(&buf[1..line]).ok()?.parse::<i64>().ok();
    match buf[0] {
        b'$' | b'=' | b'!' => {
            let len = number()?;
            if len < 0 {
                return Some(head);
            }
            let end = head + len as usize + 2;
            (buf.len() >= end).then_some(end)
        }
        b'*' | b'>' | b'~' | b'%' | b'|' => {
            let count = number()?;
            let count = if matches!(buf[0], b'%' | b'|') {
                count * 2
            } else {
                count
            };
            let mut at = head;
            for _ in 0..count.max(0) {
                at += resp_value_len(&buf[at..])?;
            }
            Some(at)
        }
        _ => Some(head),
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
