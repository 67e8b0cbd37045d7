//! The configuration file, through the real binary: `--print-config` round
//! trips through `--config`, the environment and flags override the file,
//! a wrong key is named, docs/configuration.md's example is a valid file,
//! and SIGHUP reads the file's token key again.

mod common;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Binary, WsClient, WAIT};
use serde_json::json;

/// Runs `wshub ARGS` (with `env`) to its end: (exit code, stdout, stderr).
async fn wshub(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(args)
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, out).await.expect("wshub ends").unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("wshub-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// `key = value` as --print-config shows it, in its table.
fn setting<'a>(printed: &'a str, key: &str) -> &'a str {
    printed
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("{key} in {printed}"))
}

#[tokio::test]
async fn print_config_round_trips_and_the_environment_and_flags_override_the_file() {
    let flags = [
        "--print-config",
        "--max-topics",
        "123",
        "--allowed-origins",
        "https://a.example,https://b.example",
        "--history-size",
        "50",
        "--ping-interval",
        "20s",
    ];
    let (code, printed, stderr) = wshub(&flags, &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(setting(&printed, "max-topics"), "123");
    assert_eq!(
        setting(&printed, "allowed-origins"),
        r#"["https://a.example", "https://b.example"]"#
    );
    let path = file("round-trip", &printed);
    let path = path.to_str().unwrap();
    let (code, again, stderr) = wshub(&["--config", path, "--print-config"], &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(again, printed, "the file gives back the same configuration");

    // The environment over the file, a flag over both.
    let env = [("WSHUB_MAX_TOPICS", "7")];
    let (_, from_env, _) = wshub(&["--config", path, "--print-config"], &env).await;
    assert_eq!(setting(&from_env, "max-topics"), "7");
    assert_eq!(setting(&from_env, "history-size"), "50", "the rest from the file");
    let (_, from_flag, _) = wshub(&["--config", path, "--max-topics", "9", "--print-config"], &env).await;
    assert_eq!(setting(&from_flag, "max-topics"), "9");
    // WSHUB_CONFIG names the file too.
    let (_, named, _) = wshub(&["--print-config"], &[("WSHUB_CONFIG", path)]).await;
    assert_eq!(setting(&named, "history-size"), "50");
}

#[tokio::test]
async fn secrets_are_redacted_when_printed() {
    let (code, printed, _) = wshub(
        &["--print-config", "--admin-token", "hunter2", "--jwt-secret", "s3cret"],
        &[],
    )
    .await;
    assert_eq!(code, Some(0));
    assert!(!printed.contains("hunter2") && !printed.contains("s3cret"), "{printed}");
    assert_eq!(setting(&printed, "admin-token"), r#""<redacted>""#);
}

#[tokio::test]
async fn a_wrong_key_or_value_in_the_file_is_named_and_stops_the_process() {
    let cases = [
        (
            "[limits]\nsend-queue-lenn = 1\n",
            "unknown setting `send-queue-lenn` in [limits]",
        ),
        (
            "[server]\nws-addr = \"127.0.0.1:0\"\n",
            "`ws-addr` belongs in [listeners], not [server]",
        ),
        ("[tls]\n", "unknown table [tls]"),
        ("[limits\n", "--config"),
        (
            "[server]\nping-interval = \"soon\"\n",
            "(this value comes from the configuration file",
        ),
    ];
    for (i, (text, says)) in cases.iter().enumerate() {
        let path = file(&format!("wrong-{i}"), text);
        let (code, _, stderr) = wshub(&["--config", path.to_str().unwrap()], &[]).await;
        assert_eq!(code, Some(2), "{text}: {stderr}");
        assert!(stderr.contains(says), "{text}: {stderr}");
    }
}

#[tokio::test]
async fn the_documented_example_file_is_a_valid_configuration() {
    let docs = std::fs::read_to_string("docs/configuration.md").unwrap();
    let start = docs.find("```toml\n").expect("a TOML example in docs/configuration.md") + 8;
    let example = &docs[start..start + docs[start..].find("```").unwrap()];
    let path = file("documented", example);
    let (code, printed, stderr) = wshub(&["--config", path.to_str().unwrap(), "--print-config"], &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    // Every table of the file is in the example, with every setting.
    for section in wshub::config::SECTIONS {
        assert!(example.contains(&format!("[{section}]")), "[{section}] in the example");
    }
    let keys_printed = printed.lines().filter(|l| l.contains(" = ")).count();
    let keys_documented = example.lines().filter(|l| l.contains(" = ")).count();
    assert_eq!(keys_documented, keys_printed, "the example shows every setting");
}

fn token(secret: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "exp": exp}),
        &key,
    )
    .unwrap()
}

#[tokio::test]
async fn sighup_reads_the_files_token_key_again() {
    let path = file("sighup", "[auth]\njwt-secret = \"first secret\"\n");
    let node = Binary::spawn(&["--config", path.to_str().unwrap()]).await;
    let url = |secret: &str| format!("{}?token={}", node.url(), token(secret));
    WsClient::connect(&url("first secret")).await;

    std::fs::write(&path, "[auth]\njwt-secret = \"second secret\"\n").unwrap();
    node.signal("HUP").await;
    node.log_line("client-token key reloaded").await;
    WsClient::connect(&url("second secret")).await;
    let refused = WsClient::try_connect(url("first secret"))
        .await
        .err()
        .expect("the old key is gone");
    assert_eq!(refused.0, 401);
}
