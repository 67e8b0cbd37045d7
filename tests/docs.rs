//! The documentation works as written: every `$ wshubctl …` line in the
//! README and docs/ runs, verbatim (through `sh`, so quoting and pipes are
//! the reader's), against a live node set up like the docs' examples; and
//! the README's terminal session with `python3 -m websockets` prints what
//! the README shows.

mod common;

use common::{TestServer, WsClient, WAIT};

/// The `$ wshubctl …` lines of a Markdown file's code blocks, in order.
fn documented_commands(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut in_code = false;
    let mut commands = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if in_code {
            if let Some(command) = line.strip_prefix("$ ") {
                if command.starts_with("wshubctl ") {
                    commands.push(command.to_string());
                }
            }
        }
    }
    commands
}

/// The node the docs' examples assume: c-1 on `news`, c-2 on `lobby` and
/// `news`, c-3 on nothing.
async fn node_of_the_docs() -> (TestServer, Vec<WsClient>) {
    let server = TestServer::spawn().await;
    let mut c1 = server.client().await;
    let mut c2 = server.client().await;
    let c3 = server.client().await;
    c1.subscribe("news").await;
    c2.subscribe("lobby").await;
    c2.subscribe("news").await;
    assert_eq!((c1.id.as_str(), c2.id.as_str(), c3.id.as_str()), ("c-1", "c-2", "c-3"));
    (server, vec![c1, c2, c3])
}

/// `sh -c LINE` with this build's wshubctl first on the PATH and the node's
/// admin address in WSHUB_ADMIN_ADDR (what `--addr` defaults to); no
/// profile file of the caller's is read.
fn shell(line: &str, server: &TestServer) -> tokio::process::Command {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_wshubctl")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut command = tokio::process::Command::new("sh");
    command
        .args(["-c", line])
        .env("PATH", path)
        .env("WSHUB_ADMIN_ADDR", server.admin.to_string())
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env_remove("WSHUBCTL_CONFIG")
        .env_remove("WSHUBCTL_PROFILE")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

/// `watch` runs until interrupted: it works when it prints the event a
/// kick causes.
async fn check_watch(line: &str, server: &TestServer) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = shell(line, server).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut admin = server.admin().await;
    let printed = tokio::time::timeout(WAIT, async {
        loop {
            // Until the watch is subscribed, kicks go unseen: kick new clients until one shows.
            let client = server.client().await;
            let kick = wshub::admin::pb::KickClientsRequest {
                target: Some(wshub::admin::pb::kick_clients_request::Target::ClientId(
                    client.id.clone(),
                )),
                code: 4000,
                reason: String::new(),
            };
            admin.kick_clients(kick).await.unwrap();
            let next = tokio::time::timeout(std::time::Duration::from_millis(200), lines.next_line());
            if let Ok(line) = next.await {
                return line.unwrap().expect("a line");
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("`{line}` printed nothing"));
    assert!(printed.contains("kicked"), "`{line}`: {printed}");
    child.kill().await.unwrap();
}

async fn run_documented(path: &str) -> usize {
    let commands = documented_commands(path);
    let (server, _clients) = node_of_the_docs().await;
    for line in &commands {
        if line.starts_with("wshubctl watch") {
            check_watch(line, &server).await;
            continue;
        }
        if line == "wshubctl top" {
            // Full-screen: run on a pseudo-terminal by tests/wshubctl.rs.
            continue;
        }
        let out = tokio::time::timeout(WAIT, shell(line, &server).output())
            .await
            .unwrap_or_else(|_| panic!("{path}: `{line}` did not end"))
            .unwrap();
        assert!(
            out.status.success(),
            "{path}: `{line}` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stdout.is_empty(), "{path}: `{line}` printed nothing");
    }
    server.stop().await;
    commands.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_wshubctl_commands_work_as_written() {
    assert!(run_documented("README.md").await >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_docs_wshubctl_commands_work_as_written() {
    assert!(run_documented("docs/admin-api.md").await >= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_doc_with_wshubctl_commands_works_as_written() {
    // cluster.md's commands name the nodes of its example cluster
    // (`--addr node-a:50051`): they run only there.
    for entry in std::fs::read_dir("docs").unwrap() {
        let path = entry.unwrap().path();
        let path = path.to_str().unwrap();
        if path.ends_with(".md") && !path.ends_with("admin-api.md") && !path.ends_with("cluster.md") {
            run_documented(path).await;
        }
    }
}

/// The README's session, typed into `python3 -m websockets` (what a
/// newcomer runs; the test's venv has the same package), prints the lines
/// the README shows, but for the address and the generated ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_terminal_session_is_what_python_websockets_prints() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let readme = std::fs::read_to_string("README.md").unwrap();
    let session: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("$ python3 -m websockets"))
        .take_while(|l| !l.starts_with("```"))
        .collect();
    assert!(session.len() >= 6, "the session in the README");
    let server = TestServer::spawn().await;
    let mut child = tokio::process::Command::new(common::python())
        .args(["-m", "websockets", &server.url()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    // The generated ids and the address differ from run to run.
    let normal = |line: &str| {
        let line = line.replace(&server.url(), "ws://127.0.0.1:8080/ws");
        let line = regex_lite_replace(&line, "\"client_id\":\"", "c-3");
        let line = regex_lite_replace(&line, "\"from\":\"", "c-3");
        regex_lite_replace(&line, "\"node\":\"", "myhost-3fa2c1")
    };
    for expected in &session[1..] {
        if let Some(typed) = expected.strip_prefix("> ") {
            stdin.write_all(format!("{typed}\n").as_bytes()).await.unwrap();
            continue;
        }
        let got = tokio::time::timeout(WAIT, async {
            loop {
                // The interactive client redraws its prompt around each line.
                let raw = out.next_line().await.unwrap().expect("output");
                let clean: String = strip_ansi(&raw).trim_start_matches("> ").trim().to_string();
                if !clean.is_empty() {
                    return clean;
                }
            }
        })
        .await
        .expect("the client printed the next line");
        assert_eq!(normal(&got), *expected);
    }
    drop(stdin);
    server.stop().await;
}

/// `line` with the value of the JSON string field opened by `key` set to `to`.
fn regex_lite_replace(line: &str, key: &str, to: &str) -> String {
    match line.split_once(key) {
        Some((before, rest)) => match rest.split_once('"') {
            Some((_, after)) => format!("{before}{key}{to}\"{after}"),
            None => line.to_string(),
        },
        None => line.to_string(),
    }
}

/// Removes terminal escape sequences (`ESC [ … letter`, `ESC 7`, `ESC 8`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            if c != '\r' {
                out.push(c);
            }
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}
