//! `wshubctl`, the real binary, against a live server: what an operator
//! types and reads.

mod common;

use common::pki::Pki;
use common::{TestServer, WAIT};
use serde_json::Value;

/// Runs `wshubctl --addr ADDR ARGS...` within the test deadline.
async fn ctl(addr: &str, args: &[&str]) -> std::process::Output {
    let args: Vec<&str> = ["--addr", addr].into_iter().chain(args.iter().copied()).collect();
    ctl_env(&[], &args).await
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_list_counts_every_client_whatever_the_limit() {
    let server = TestServer::spawn().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(server.client().await);
    }
    let addr = server.admin.to_string();

    // --limit 0 is "no limit": every client, and the true total.
    let out = ctl(&addr, &["clients", "list", "--limit", "0"]).await;
    let table = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(table.contains("3 of 3 clients"), "{table}");
    assert!(clients.iter().all(|c| table.contains(&c.id)), "{table}");

    let out = ctl(&addr, &["clients", "list", "--limit", "2"]).await;
    assert!(stdout(&out).contains("2 of 3 clients"), "{}", stdout(&out));

    // --json: one object with the total and the clients shown.
    let out = ctl(&addr, &["--json", "clients", "list", "--limit", "2"]).await;
    let list: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(list["total"], 3, "{list}");
    assert_eq!(list["clients"].as_array().map(Vec::len), Some(2), "{list}");
    assert_eq!(list["partial"], false);
    // Each was sent its welcome: counted in messages and payload bytes.
    let first = &list["clients"][0];
    assert_eq!(first["messages_sent"], 1, "{first}");
    assert!(first["bytes_sent"].as_u64().is_some_and(|b| b > 20), "{first}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_reports_each_step_once_and_can_run_again() {
    let server = TestServer::spawn().await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(server.client().await);
    }
    let addr = server.admin.to_string();
    let out = ctl(&addr, &["drain", "--rate", "1000"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<&str> = stdout(&out).leak().lines().collect();
    let last: Vec<&str> = lines.last().map(|l| l.split_whitespace().collect()).unwrap_or_default();
    assert_eq!(last, ["closed", "5", "remaining", "0", "done"], "{lines:?}");
    let mut unique = lines.clone();
    unique.dedup_by(|a, b| a.replace("done", "").trim() == b.replace("done", "").trim());
    assert_eq!(unique, lines, "a progress step printed twice");
    for client in &mut clients {
        assert_eq!(client.closed().await.0, 1012, "drained: service restart");
    }

    // A finished drain is not "already running": a second one finds nothing left.
    let out = ctl(&addr, &["--json", "drain"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let last: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["remaining"].as_u64(), last["done"].as_bool()),
        (Some(0), Some(true))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_name_the_address_and_the_cause() {
    // Nothing listens: a port that was just free.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = ctl(&free.to_string(), &["stats"]).await;
    assert_eq!(out.status.code(), Some(1));
    let error = stderr(&out);
    assert!(
        error.contains(&free.to_string()) && error.contains("nothing listens"),
        "{error}"
    );

    // A token the server refuses.
    let server = TestServer::with(|c| c.admin_token = Some("right".into())).await;
    let addr = server.admin.to_string();
    let out = ctl(&addr, &["--token", "wrong", "stats"]).await;
    let error = stderr(&out);
    assert!(error.contains(&addr) && error.contains("token"), "{error}");
    let out = ctl(&addr, &["stats"]).await;
    let error = stderr(&out);
    assert!(error.contains("--token"), "no token given: {error}");
    server.stop().await;

    // The node's other ports, by mistake: named as HTTP servers.
    let server = TestServer::spawn().await;
    for port in [server.ws, server.metrics] {
        let out = ctl(&port.to_string(), &["stats"]).await;
        let error = stderr(&out);
        assert!(
            error.contains("is an HTTP server, not the admin API"),
            "{port}: {error}"
        );
    }
    server.stop().await;

    // Plain text against a TLS port, and TLS against a plain one.
    let pki = Pki::new("ctl");
    let (cert, key, _, _) = pki.leaf("localhost");
    let server = TestServer::with(|c| {
        c.admin_tls_cert = Some(cert);
        c.admin_tls_key = Some(key);
    })
    .await;
    let addr = server.admin.to_string();
    let out = ctl(&addr, &["stats"]).await;
    let error = stderr(&out);
    assert!(error.contains(&addr) && error.contains("https://"), "{error}");
    server.stop().await;
    let server = TestServer::spawn().await;
    let addr = format!("https://{}", server.admin);
    let out = ctl(&addr, &["stats"]).await;
    let error = stderr(&out);
    assert!(error.contains(&addr) && error.contains("TLS"), "{error}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_the_node_and_ends_on_q_or_ctrl_c_restoring_the_terminal() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    client.subscribe("news").await;
    for key in ["q", "\u{3}"] {
        let out = tokio::process::Command::new(common::python())
            .arg("tests/ctl/top.py")
            .arg(env!("CARGO_BIN_EXE_wshubctl"))
            .arg(server.admin.to_string())
            .arg(&client.id)
            .arg(key)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(WAIT * 2, out).await.expect("top ends").unwrap();
        assert!(out.status.success(), "key {key:?}: {}", stderr(&out));
        let screen = stdout(&out);
        assert!(
            screen.contains("clients")
                && screen.contains("deepest send queues")
                && screen.contains("news")
                && screen.contains(", ready"),
            "{screen}"
        );
    }
    // Not a terminal: a clear refusal, not a garbled screen.
    let out = ctl(&server.admin.to_string(), &["top"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("needs a terminal"), "{}", stderr(&out));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_plain_lines_when_piped() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let server = TestServer::spawn().await;
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_wshubctl"))
        .args(["--addr", &server.admin.to_string(), "watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // The watch is subscribed once an event it caused shows up; connect until one does.
    let mut clients = Vec::new();
    let line = loop {
        clients.push(server.client().await);
        if let Ok(line) = tokio::time::timeout(std::time::Duration::from_millis(200), lines.next_line()).await {
            break line.unwrap().expect("a line");
        }
        assert!(clients.len() < 50, "no event line");
    };
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[1], "connected", "{line}");
    assert!(fields[2].starts_with("c-"), "{line}");
    assert!(!line.contains('\u{1b}'), "no colour codes in a pipe: {line:?}");
    // The node shutting down ends the watch: said so, and not a success.
    server.stop().await;
    drop(lines);
    let out = tokio::time::timeout(WAIT, watch.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let error = stderr(&out);
    assert!(error.starts_with("watching "), "a header first: {error}");
    assert!(error.contains("the node ended the stream"), "{error}");
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_for_each_shell() {
    // No server needed: completions never connect.
    for (shell, mark) in [
        ("bash", "_wshubctl()"),
        ("zsh", "#compdef wshubctl"),
        ("fish", "complete -c wshubctl"),
    ] {
        let out = ctl("127.0.0.1:1", &["completions", shell]).await;
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(mark) && script.contains("drain"), "{shell}");
    }
}

/// A node whose admin port asks for a client certificate signed by `pki`'s
/// CA and the token `secret`.
async fn mtls_server(pki: &Pki) -> TestServer {
    let (cert, key, _, _) = pki.leaf("localhost");
    TestServer::with(|c| {
        c.admin_tls_cert = Some(cert);
        c.admin_tls_key = Some(key);
        c.admin_tls_client_ca = Some(pki.dir.join("ca.pem"));
        c.admin_token = Some("secret".into());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_reaches_an_mtls_admin_port_and_its_absence_is_named() {
    let pki = Pki::new("ctl-mtls");
    let server = mtls_server(&pki).await;
    let (client_cert, client_key, _, _) = pki.leaf("operator");
    let addr = format!("https://localhost:{}", server.admin.port());
    let ca = pki.dir.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let token_file = pki.dir.join("token");
    std::fs::write(&token_file, "secret\n").unwrap();
    let token_file = token_file.to_str().unwrap();

    // With the certificate and the token from a file: it works.
    let (cert, key) = (client_cert.to_str().unwrap(), client_key.to_str().unwrap());
    let args = [
        "--ca",
        ca,
        "--cert",
        cert,
        "--key",
        key,
        "--token-file",
        token_file,
        "--json",
        "stats",
    ];
    let out = ctl(&addr, &args).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(stats["clients"], 0, "{stats}");

    // Without it: the message names the missing client certificate, not the CA.
    let out = ctl(&addr, &["--ca", ca, "--token-file", token_file, "stats"]).await;
    assert_eq!(out.status.code(), Some(1));
    let error = stderr(&out);
    assert!(
        error.contains("client certificate") && error.contains("--cert"),
        "{error}"
    );

    // A certificate from another CA: refused, and said so.
    let other = Pki::new("ctl-mtls-other");
    let (stranger_cert, stranger_key, _, _) = other.leaf("operator");
    let (cert, key) = (stranger_cert.to_str().unwrap(), stranger_key.to_str().unwrap());
    let out = ctl(
        &addr,
        &[
            "--ca",
            ca,
            "--cert",
            cert,
            "--key",
            key,
            "--token-file",
            token_file,
            "stats",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let error = stderr(&out);
    assert!(error.contains("refused this client certificate"), "{error}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_says_whether_the_node_is_ready_or_draining() {
    let server = TestServer::spawn().await;
    let addr = server.admin.to_string();
    let out = ctl(&addr, &["--json", "stats"]).await;
    let stats: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(stats["state"], "ready", "{stats}");
    let out = ctl(&addr, &["stats"]).await;
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("state") && l.ends_with(" ready")),
        "{}",
        stdout(&out)
    );
    let out = ctl(&addr, &["drain", "--rate", "1000"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ctl(&addr, &["--json", "stats"]).await;
    let stats: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(stats["state"], "not ready: draining or shutting down", "{stats}");
    server.stop().await;
}

/// Runs wshubctl with `env` as its only settings from the environment (none
/// of the caller's own, no profile file from HOME).
async fn ctl_env(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_wshubctl"));
    for var in [
        "WSHUB_ADMIN_ADDR",
        "WSHUB_ADMIN_TOKEN",
        "WSHUB_ADMIN_TOKEN_FILE",
        "WSHUB_ADMIN_CA",
        "WSHUB_ADMIN_CERT",
        "WSHUB_ADMIN_KEY",
        "WSHUBCTL_CONFIG",
        "WSHUBCTL_PROFILE",
        "XDG_CONFIG_HOME",
    ] {
        command.env_remove(var);
    }
    let out = command
        .env("HOME", "/nonexistent")
        .envs(env.iter().copied())
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(WAIT, out)
        .await
        .expect("wshubctl ends")
        .expect("wshubctl runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_names_a_target_and_flags_and_the_environment_win_over_it() {
    let pki = Pki::new("ctl-profile");
    let server = mtls_server(&pki).await;
    pki.leaf("operator");
    std::fs::write(pki.dir.join("token"), "secret\n").unwrap();
    let config = pki.dir.join("wshubctl.toml");
    let port = server.admin.port();
    let profiles = format!(
        "default = \"mtls\"\n\n\
         [profiles.mtls]\n\
         addr = \"https://localhost:{port}\"\n\
         token_file = \"token\"\n\
         ca = \"ca.pem\"\n\
         cert = \"operator.pem\"\n\
         key = \"operator.key\"\n\n\
         [profiles.nowhere]\n\
         addr = \"127.0.0.1:1\"\n"
    );
    std::fs::write(&config, &profiles).unwrap();
    let env = [("WSHUBCTL_CONFIG", config.to_str().unwrap())];

    // The default profile gives every setting, its paths taken from the
    // file's folder: mutual TLS and the token work with no flag at all.
    let out = ctl_env(&env, &["--json", "stats"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(stats["clients"], 0, "{stats}");

    // Another profile, by flag or by environment.
    let out = ctl_env(&env, &["--profile", "nowhere", "stats"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("127.0.0.1:1"), "{}", stderr(&out));
    let chosen = [env[0], ("WSHUBCTL_PROFILE", "nowhere")];
    let out = ctl_env(&chosen, &["stats"]).await;
    assert!(stderr(&out).contains("127.0.0.1:1"), "{}", stderr(&out));

    // A flag wins over the profile, and so does the environment.
    let out = ctl_env(&env, &["--addr", "127.0.0.1:2", "stats"]).await;
    assert!(stderr(&out).contains("127.0.0.1:2"), "{}", stderr(&out));
    let addr = [env[0], ("WSHUB_ADMIN_ADDR", "127.0.0.1:3")];
    let out = ctl_env(&addr, &["stats"]).await;
    assert!(stderr(&out).contains("127.0.0.1:3"), "{}", stderr(&out));
    let out = ctl_env(&env, &["--token", "wrong", "stats"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("refused the admin token"), "{}", stderr(&out));

    // `profiles` lists them, the default marked, and connects nowhere.
    let out = ctl_env(&env, &["profiles"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = stdout(&out);
    assert!(
        listed.contains(&format!("* mtls             https://localhost:{port}")),
        "{listed}"
    );
    assert!(listed.contains("  nowhere          127.0.0.1:1"), "{listed}");

    // The example in docs/admin-api.md is a valid profile file.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin-api.md")).unwrap();
    let example = doc
        .split("**Profiles.**")
        .nth(1)
        .and_then(|rest| rest.split("```toml\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("admin-api.md shows a profile file");
    let documented = pki.dir.join("documented.toml");
    std::fs::write(&documented, example).unwrap();
    let out = ctl_env(&[], &["--config", documented.to_str().unwrap(), "--json", "profiles"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let prod = listed.iter().find(|p| p["name"] == "prod").expect("prod");
    assert_eq!(
        prod["ca"],
        pki.dir.join("ca.pem").to_str().unwrap(),
        "from the file's folder"
    );
    assert!(listed.iter().any(|p| p["name"] == "staging" && p["default"] == true));

    // What cannot be used is a usage error (exit 2) that names it.
    let out = ctl_env(&env, &["--profile", "prod", "stats"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no profile \"prod\"") && stderr(&out).contains("(it has: mtls, nowhere)"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&config, profiles.replace("addr = \"127", "adress = \"127")).unwrap();
    let out = ctl_env(&env, &["stats"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("adress"), "{}", stderr(&out));
    let missing = [("WSHUBCTL_CONFIG", "/nonexistent/wshubctl.toml")];
    let out = ctl_env(&missing, &["stats"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/wshubctl.toml"), "{}", stderr(&out));
    server.stop().await;
}
