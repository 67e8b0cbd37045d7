//! wss:// on the WebSocket port through rustls, with certificates made at
//! test time, and what SIGHUP reloads under live connections: the
//! certificate and the client-token key.

mod common;

use std::sync::Arc;

use common::pki::Pki;
use common::{Binary, WAIT};
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// Opens wss://localhost/ws on `server`, trusting only `ca_pem`; reads the welcome.
async fn wss(server: &Binary, ca_pem: &str) -> Result<(Wss, Value), String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(server.ws).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/ws", tls)
        .await
        .map_err(|e| e.to_string())?;
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome");
    Ok((ws, welcome))
}

async fn next_json(ws: &mut Wss) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn ping(ws: &mut Wss) {
    ws.send(Message::text(r#"{"type":"ping","id":1}"#)).await.unwrap();
    assert_eq!(next_json(ws).await, json!({"type":"pong","id":1}));
}

/// Waits until `series` on the binary's metrics listener reads `value`.
async fn metric_reaches(server: &Binary, series: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = common::metric(server.metrics, series).await;
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stayed at {now}, not {value}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_serves_and_reloads_its_certificate_on_sighup_without_dropping_clients() {
    let (first, second) = (Pki::new("wss-first"), Pki::new("wss-second"));
    let (cert, key, _, _) = first.leaf("localhost");
    let server = Binary::spawn(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]).await;
    let (mut live, _) = wss(&server, &first.ca.pem())
        .await
        .expect("wss with the first certificate");
    ping(&mut live).await;

    // Plain ws:// to the TLS port fails its TLS handshake, counted.
    let plain = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.ws)).await;
    assert!(plain.is_err());
    metric_reaches(&server, "wshub_handshake_failures_total{reason=\"tls\"}", 1.0).await;

    // New certificate from another CA in the same files, then SIGHUP.
    let (_, _, cert_pem, key_pem) = second.leaf("localhost");
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    server.signal("HUP").await;
    metric_reaches(&server, "wshub_reloads_total{what=\"tls\",result=\"ok\"}", 1.0).await;
    let (mut fresh, _) = wss(&server, &second.ca.pem())
        .await
        .expect("new clients get the new certificate");
    let old_trust = wss(&server, &first.ca.pem()).await;
    assert!(old_trust.is_err(), "the old certificate is no longer offered");
    ping(&mut live).await;
    ping(&mut fresh).await;

    // A broken file keeps the certificate in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    server.signal("HUP").await;
    metric_reaches(&server, "wshub_reloads_total{what=\"tls\",result=\"error\"}", 1.0).await;
    wss(&server, &second.ca.pem())
        .await
        .expect("still the second certificate");
    ping(&mut live).await;
    server.sigterm().await;
}

/// An HS256 token for `sub`, signed with `secret`, valid for an hour.
fn token(secret: &str, sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &json!({"sub": sub, "exp": exp}), &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_token_key_file_is_reloaded_on_sighup_without_dropping_clients() {
    let dir = std::env::temp_dir().join(format!("wshub-jwt-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("jwt-secret");
    std::fs::write(&secret_file, "first-secret\n").unwrap();
    let server = Binary::spawn(&["--jwt-secret-file", secret_file.to_str().unwrap()]).await;
    let url = |token: &str| format!("{}?token={token}", server.url());
    let mut live = common::WsClient::connect(&url(&token("first-secret", "early"))).await;

    std::fs::write(&secret_file, "second-secret\n").unwrap();
    server.signal("HUP").await;
    metric_reaches(&server, "wshub_reloads_total{what=\"jwt_key\",result=\"ok\"}", 1.0).await;
    let refused = common::WsClient::try_connect(url(&token("first-secret", "late")).as_str()).await;
    assert_eq!(
        refused.err().map(|(status, _)| status),
        Some(401),
        "the old key no longer signs"
    );
    let fresh = common::WsClient::connect(&url(&token("second-secret", "late"))).await;
    assert_eq!(fresh.welcome["user"], "late");
    live.ping().await;

    // An empty file does not load: the second secret stays in use.
    std::fs::write(&secret_file, "").unwrap();
    server.signal("HUP").await;
    metric_reaches(&server, "wshub_reloads_total{what=\"jwt_key\",result=\"error\"}", 1.0).await;
    common::WsClient::connect(&url(&token("second-secret", "later"))).await;
    live.ping().await;
    server.sigterm().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
