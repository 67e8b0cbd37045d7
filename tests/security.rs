//! Client identity, limits and their refusals, against the real server:
//! JWTs (query and header; HS256, ES256, RS256), topic and publish claims,
//! expiry while connected, origins, connection limits (total, per address,
//! behind a trusted proxy), the rate limit, the node's topic cap, the
//! handshake timeout and the admin token file. Every refusal is checked in
//! its metric too.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{TestServer, WsClient, WAIT};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wshub::admin::pb;

const SECRET: &str = "test-secret-of-reasonable-length";

/// Metrics are per process: tests that count refusals take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// An HS256 token with `claims` (`exp` an hour ahead unless given).
fn token(claims: Value) -> String {
    token_with(SECRET, claims)
}

fn token_with(secret: &str, mut claims: Value) -> String {
    if claims.get("exp").is_none() {
        claims["exp"] = json!(now() + 3600);
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    sign(jsonwebtoken::Algorithm::HS256, &key, &claims)
}

fn sign(algorithm: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), claims, key).unwrap()
}

async fn auth_server(configure: impl FnOnce(&mut wshub::Config)) -> TestServer {
    TestServer::with(|c| {
        c.auth.jwt_secret = Some(SECRET.into());
        configure(c);
    })
    .await
}

fn with_token(server: &TestServer, token: &str) -> String {
    format!("{}?token={token}", server.url())
}

async fn refused(request: impl IntoClientRequest + Unpin) -> (u16, String) {
    match WsClient::try_connect(request).await {
        Ok(client) => panic!("expected a refusal, got welcome {}", client.welcome),
        Err(refusal) => refusal,
    }
}

async fn failures(server: &TestServer, reason: &str) -> f64 {
    server
        .metric(&format!("wshub_handshake_failures_total{{reason=\"{reason}\"}}"))
        .await
}

async fn client_errors(server: &TestServer, code: &str) -> f64 {
    server
        .metric(&format!("wshub_client_errors_total{{code=\"{code}\"}}"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_names_the_user_for_clients_and_operators() {
    let _serial = SERIAL.lock().await;
    let server = auth_server(|_| {}).await;
    let mut by_query = WsClient::connect(&with_token(&server, &token(json!({"sub": "alice"})))).await;
    assert_eq!(by_query.welcome["user"], "alice");
    let mut request = server.url().into_client_request().unwrap();
    let bearer = format!("Bearer {}", token(json!({"sub": "bob \u{1F600} \"quoted\""})));
    request.headers_mut().insert("authorization", bearer.parse().unwrap());
    let by_header = WsClient::try_connect(request).await.expect("header token accepted");
    assert_eq!(by_header.welcome["user"], "bob \u{1F600} \"quoted\"");

    let mut admin = server.admin().await;
    let info = admin
        .get_client(pb::GetClientRequest {
            client_id: by_query.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.user, "alice");
    let listed = admin
        .list_clients(pb::ListClientsRequest {
            user: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total, 1);
    assert_eq!(listed.clients[0].id, by_query.id);

    // An issuer's "never": an exp past what the clock holds.
    let mut forever = WsClient::connect(&with_token(&server, &token(json!({"sub": "f", "exp": u64::MAX})))).await;
    forever.ping().await;

    let kicked = admin
        .kick_clients(pb::KickClientsRequest {
            target: Some(pb::kick_clients_request::Target::User("alice".into())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kicked.kicked, 1);
    assert_eq!(by_query.closed().await.0, 4000);
    let stats = server.stats().await;
    assert_eq!(stats.clients, 2, "bob and f stay");
    forever.ping().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_401_before_the_upgrade() {
    let _serial = SERIAL.lock().await;
    let server = auth_server(|c| {
        c.auth.jwt_audience = Some("wshub".into());
        c.auth.jwt_issuer = Some("https://auth.example.com".into());
    })
    .await;
    let good = json!({"sub": "u", "aud": "wshub", "iss": "https://auth.example.com"});
    let before = failures(&server, "auth").await;
    let _good = WsClient::connect(&with_token(&server, &token(good.clone()))).await;

    let mut cases = vec![
        (server.url(), "missing token"),
        (with_token(&server, "not.a.jwt"), "invalid token"),
        (
            with_token(&server, &token_with("another-secret", good.clone())),
            "signature",
        ),
    ];
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 3600);
    let mut audience = good.clone();
    audience["aud"] = json!("someone-else");
    let mut issuer = good.clone();
    issuer["iss"] = json!("https://evil.example.com");
    let mut no_sub = good.clone();
    no_sub.as_object_mut().unwrap().remove("sub");
    let mut bad_topics = good.clone();
    bad_topics["topics"] = json!(["has space"]);
    for (claims, reason) in [
        (expired, "expired"),
        (audience, "audience"),
        (issuer, "issuer"),
        (no_sub, "required"),
        (bad_topics, "topic pattern"),
    ] {
        cases.push((with_token(&server, &token(claims)), reason));
    }
    // alg "none" is never accepted.
    let unsigned = {
        let token = token(good.clone());
        let mut parts = token.split('.');
        let (_, payload) = (parts.next(), parts.next().unwrap());
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
    };
    cases.push((with_token(&server, &unsigned), "invalid token"));
    let n = cases.len() as f64;
    for (url, reason) in cases {
        let (status, body) = refused(url.as_str()).await;
        assert_eq!(status, 401, "{reason}: {body}");
        assert!(body.contains(reason), "401 body {body:?} should say {reason:?}");
    }
    assert_eq!(failures(&server, "auth").await - before, n);
    assert_eq!(server.stats().await.clients, 1, "no refused request became a client");
    server.stop().await;
}

/// What docs/security.md says is checked: `nbf` (with the leeway), `iss`
/// and `aud` required once configured (a string `iss`, never an array or
/// null), no `exp` already past whatever the leeway, no empty `sub`; and
/// which token counts when a request carries two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_checked_as_the_docs_say() {
    let _serial = SERIAL.lock().await;
    let server = auth_server(|c| {
        c.auth.jwt_audience = Some("wshub".into());
        c.auth.jwt_issuer = Some("https://auth.example.com".into());
        c.auth.jwt_leeway = Duration::from_secs(5);
    })
    .await;
    let good = json!({"sub": "u", "aud": "wshub", "iss": "https://auth.example.com"});
    let with = |key: &str, value: Value| {
        let mut claims = good.clone();
        claims[key] = value;
        claims
    };
    let without = |key: &str| {
        let mut claims = good.clone();
        claims.as_object_mut().unwrap().remove(key);
        claims
    };
    let refusals = [
        (with("nbf", json!(now() + 3600)), "not valid yet"),
        (without("iss"), "wrong issuer"),
        (with("iss", Value::Null), "wrong issuer"),
        (with("iss", json!(["https://auth.example.com", "evil"])), "wrong issuer"),
        (without("aud"), "wrong audience"),
        (with("aud", Value::Null), "wrong audience"),
        // Inside the leeway, but past: it would be closed as it opened.
        (with("exp", json!(now() - 3)), "token expired"),
        (with("exp", json!(now())), "token expired"),
        (with("sub", json!("")), "sub is empty"),
    ];
    for (claims, reason) in refusals {
        let (status, body) = refused(with_token(&server, &token(claims.clone())).as_str()).await;
        assert_eq!((status, body.contains(reason)), (401, true), "{claims}: {body}");
    }
    // The edges that pass: nbf inside the leeway; exp seconds ahead,
    // and the connection is kept (it answers a ping) rather than closed at once.
    let mut early = WsClient::connect(&with_token(&server, &token(with("nbf", json!(now() + 3))))).await;
    early.ping().await;
    let mut brief = WsClient::connect(&with_token(&server, &token(with("exp", json!(now() + 10))))).await;
    brief.ping().await;
    let audiences = with("aud", json!(["other", "wshub"]));
    WsClient::connect(&with_token(&server, &token(audiences))).await;

    // Both a query token and a header: the query's counts; an empty
    // `?token=` is no token, so the header's counts.
    let header = format!("Bearer {}", token(with("sub", json!("header"))));
    let both = format!("{}?token={}", server.url(), token(with("sub", json!("query"))));
    for (url, user) in [(both, "query"), (format!("{}?token=", server.url()), "header")] {
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("authorization", header.parse().unwrap());
        let client = WsClient::try_connect(request).await.expect("accepted");
        assert_eq!(client.welcome["user"], user);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_keys_verify_es256_and_rs256_tokens() {
    let _serial = SERIAL.lock().await;
    let dir = tempdir();
    // ES256: a P-256 key pair from rcgen.
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ec_public = dir.join("ec.pub.pem");
    std::fs::write(&ec_public, ec.public_key_pem()).unwrap();
    let server = TestServer::with(|c| c.auth.jwt_public_key = Some(ec_public.clone())).await;
    let key = jsonwebtoken::EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap();
    let claims = json!({"sub": "ec-user", "exp": now() + 60});
    let es256 = sign(jsonwebtoken::Algorithm::ES256, &key, &claims);
    let client = WsClient::connect(&with_token(&server, &es256)).await;
    assert_eq!(client.welcome["user"], "ec-user");
    // An HS256 token signed with the public key's text is refused (no algorithm confusion).
    let confused = token_with(&ec.public_key_pem(), claims.clone());
    assert_eq!(refused(with_token(&server, &confused).as_str()).await.0, 401);
    server.stop().await;

    // RS256: an RSA key made by openssl (scripts/test installs it).
    let rsa_private = dir.join("rsa.pem");
    let rsa_public = dir.join("rsa.pub.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&rsa_private)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(made.success());
    let exported = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&rsa_private)
        .arg("-out")
        .arg(&rsa_public)
        .status()
        .unwrap();
    assert!(exported.success());
    let server = TestServer::with(|c| c.auth.jwt_public_key = Some(rsa_public.clone())).await;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&rsa_private).unwrap()).unwrap();
    let claims = json!({"sub": "rsa-user", "exp": now() + 60});
    let rs256 = sign(jsonwebtoken::Algorithm::RS256, &key, &claims);
    let client = WsClient::connect(&with_token(&server, &rs256)).await;
    assert_eq!(client.welcome["user"], "rsa-user");
    assert_eq!(
        refused(with_token(&server, &es256).as_str()).await.0,
        401,
        "wrong key type"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_and_publish_claims_answer_forbidden_and_keep_the_connection() {
    let _serial = SERIAL.lock().await;
    let server = auth_server(|_| {}).await;
    let before = client_errors(&server, "forbidden").await;
    let scoped = token(json!({"sub": "s", "topics": ["news", "chat.*"]}));
    let mut client = WsClient::connect(&with_token(&server, &scoped)).await;
    client.subscribe("news").await;
    client.subscribe("chat.room-1").await;
    for topic in ["admin", "chat", "newsroom"] {
        let answer = client.request(json!({"type":"subscribe","topic":topic,"id":1})).await;
        assert_eq!(answer["code"], "forbidden", "{topic}: {answer}");
        assert_eq!(answer["id"], 1);
    }
    let answer = client
        .request(json!({"type":"publish","topic":"admin","data":1,"id":2}))
        .await;
    assert_eq!(answer["code"], "forbidden");
    let answer = client.request(json!({"type":"publish","data":1,"id":3})).await;
    assert_eq!(
        answer["code"], "forbidden",
        "publishing to everyone is not a listed topic"
    );
    client.ping().await;
    let stats = server.stats().await;
    assert_eq!(stats.topics, 2, "no forbidden topic was created");

    // A listen-only client receives but may not publish.
    let listen_only = token(json!({"sub": "l", "publish": false}));
    let mut listener = WsClient::connect(&with_token(&server, &listen_only)).await;
    listener.subscribe("news").await;
    let answer = listener
        .request(json!({"type":"publish","topic":"news","data":1,"id":4}))
        .await;
    assert_eq!(answer["code"], "forbidden");
    client
        .send(json!({"type":"publish","topic":"news","data":"hi","id":5}))
        .await;
    let mut own = [client.recv().await, client.recv().await];
    own.sort_by_key(|frame| frame["type"].to_string());
    assert_eq!(own[0], json!({"type":"ack","id":5}));
    assert_eq!(own[1]["data"], "hi", "the publisher is subscribed to news too");
    assert_eq!(listener.recv().await["data"], "hi");
    assert_eq!(client_errors(&server, "forbidden").await - before, 6.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_while_connected_closes_with_1008() {
    let _serial = SERIAL.lock().await;
    let closing = auth_server(|_| {}).await;
    let keeping = auth_server(|c| c.auth.jwt_close_on_expiry = false).await;
    let before = closing
        .metric("wshub_disconnects_total{reason=\"token_expired\"}")
        .await;
    let soon = token(json!({"sub": "short", "exp": now() + 2}));
    let mut closed = WsClient::connect(&with_token(&closing, &soon)).await;
    let mut kept = WsClient::connect(&with_token(&keeping, &soon)).await;
    let mut events = closing.watch(&[pb::EventKind::Disconnected]).await;
    assert_eq!(closed.closed().await, (1008, "token expired".to_string()));
    let event = common::event_for(&mut events, pb::EventKind::Disconnected, &closed.id).await;
    assert_eq!(event.reason, "token_expired");
    // The same expiry on a node told not to close: still served past it.
    kept.ping().await;
    assert_eq!(
        closing
            .metric("wshub_disconnects_total{reason=\"token_expired\"}")
            .await
            - before,
        1.0
    );
    closing.stop().await;
    keeping.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_outside_the_list_get_403() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::with(|c| {
        c.gate.allowed_origins = vec!["https://app.example.com".into(), "https://*.example.org".into()];
    })
    .await;
    let before = failures(&server, "origin").await;
    let with_origin = |origin: &str| {
        let mut request = server.url().into_client_request().unwrap();
        request.headers_mut().insert("origin", origin.parse().unwrap());
        request
    };
    WsClient::try_connect(with_origin("https://app.example.com"))
        .await
        .unwrap();
    WsClient::try_connect(with_origin("https://eu.example.org"))
        .await
        .unwrap();
    WsClient::try_connect(server.url())
        .await
        .expect("no Origin: not a browser");
    for origin in ["https://evil.com", "http://app.example.com", "https://example.org"] {
        let (status, body) = refused(with_origin(origin)).await;
        assert_eq!((status, body.as_str()), (403, "origin not allowed\n"), "{origin}");
    }
    assert_eq!(failures(&server, "origin").await - before, 3.0);
    server.stop().await;
}

/// Connects until the node has freed a slot (a closed client's slot is
/// given back when its connection task ends, just after it unregisters):
/// the client, and how many attempts were refused before it.
async fn connect_when_freed(url: &str) -> (WsClient, f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut refusals = 0.0;
    loop {
        match WsClient::try_connect(url).await {
            Ok(client) => return (client, refusals),
            Err(_) if tokio::time::Instant::now() < deadline => {
                refusals += 1.0;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(refusal) => panic!("slot never freed: {refusal:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_answer_503_and_429_and_free_their_count() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::with(|c| {
        c.gate.max_connections = Some(3);
        c.gate.max_connections_per_ip = 2;
    })
    .await;
    let per_ip = failures(&server, "max_connections_per_ip").await;
    assert_eq!(server.metric("wshub_max_connections").await, 3.0);
    let mut first = server.client().await;
    let _second = server.client().await;
    let (status, body) = refused(server.url().as_str()).await;
    assert_eq!(
        (status, body.as_str()),
        (429, "too many connections from this address\n")
    );
    first.ws.close(None).await.unwrap();
    let (_third, retries) = connect_when_freed(&server.url()).await;
    assert_eq!(
        failures(&server, "max_connections_per_ip").await - per_ip,
        1.0 + retries
    );
    server.stop().await;

    // Sockets that never finish their handshake count too: they cannot
    // take the node's sockets past the limit while they wait out the timeout.
    let server = TestServer::with(|c| c.gate.max_connections = Some(2)).await;
    let before = failures(&server, "max_connections").await;
    let silent = tokio::net::TcpStream::connect(server.ws).await.unwrap();
    let client = server.client().await;
    let mut third = tokio::net::TcpStream::connect(server.ws).await.unwrap();
    let mut answer = String::new();
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(WAIT, third.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.ends_with("too many connections on this node\n"), "{answer}");
    drop(silent);
    let (fourth, retries) = connect_when_freed(&server.url()).await;
    assert_eq!(failures(&server, "max_connections").await - before, 1.0 + retries);
    drop((client, fourth));
    server.stop().await;

    // Behind a trusted proxy each forwarded address counts on its own, and
    // the node-wide limit still holds.
    let proxied = TestServer::with(|c| {
        c.gate.max_connections = Some(3);
        c.gate.max_connections_per_ip = 1;
        c.gate.trusted_proxies = vec![wshub::config::parse_net("127.0.0.1").unwrap()];
    })
    .await;
    let (total, per_ip) = (
        failures(&proxied, "max_connections").await,
        failures(&proxied, "max_connections_per_ip").await,
    );
    let from = |ip: &str| {
        let mut request = proxied.url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("x-forwarded-for", format!("{ip}, 127.0.0.1").parse().unwrap());
        request
    };
    let a = WsClient::try_connect(from("203.0.113.1")).await.unwrap();
    assert_eq!(refused(from("203.0.113.1")).await.0, 429);
    let _b = WsClient::try_connect(from("203.0.113.2")).await.unwrap();
    let _c = WsClient::try_connect(from("203.0.113.3")).await.unwrap();
    let (status, body) = refused(from("203.0.113.4")).await;
    assert_eq!((status, body.as_str()), (503, "too many connections on this node\n"));
    let info = proxied
        .admin()
        .await
        .get_client(pb::GetClientRequest {
            client_id: a.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(info.remote_addr.starts_with("203.0.113.1:"), "{}", info.remote_addr);
    assert_eq!(failures(&proxied, "max_connections").await - total, 1.0);
    assert_eq!(failures(&proxied, "max_connections_per_ip").await - per_ip, 1.0);
    proxied.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_is_refused_then_closed_while_others_keep_their_latency() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::with(|c| {
        c.client.client_rate = 20;
        c.client.client_burst = Some(20);
        c.client.client_rate_grace = Duration::from_secs(2);
    })
    .await;
    let (errors, closes) = (
        client_errors(&server, "rate_limited").await,
        server.metric("wshub_disconnects_total{reason=\"rate_limited\"}").await,
    );
    let mut flooder = server.client().await;
    let mut calm = server.client().await;
    // The flooder sends as fast as it can and reads everything back.
    let flood = tokio::spawn(async move {
        let (mut allowed, mut limited) = (0, 0);
        let started = tokio::time::Instant::now();
        loop {
            for _ in 0..50 {
                flooder.send(json!({"type":"ping"})).await;
            }
            loop {
                match tokio::time::timeout(Duration::from_millis(5), futures_util::StreamExt::next(&mut flooder.ws))
                    .await
                {
                    Err(_) => break,
                    Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                        let v: Value = serde_json::from_str(&t).unwrap();
                        match v["type"].as_str() {
                            Some("pong") => allowed += 1,
                            Some("error") if v["code"] == "rate_limited" => limited += 1,
                            _ => panic!("unexpected {v}"),
                        }
                    }
                    Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame))))) => {
                        return (
                            allowed,
                            limited,
                            u16::from(frame.code),
                            frame.reason.to_string(),
                            started.elapsed(),
                        );
                    }
                    Ok(other) => panic!("unexpected {other:?}"),
                }
            }
            assert!(started.elapsed() < WAIT, "never closed");
        }
    });
    // Meanwhile a calm client's pings all come back, none refused.
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let sent = tokio::time::Instant::now();
        calm.ping().await;
        worst = worst.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (allowed, limited, code, reason, after) = flood.await.unwrap();
    assert_eq!((code, reason.as_str()), (4029, "rate limited"));
    assert!(
        after >= Duration::from_secs(2),
        "closed after the grace, not before: {after:?}"
    );
    assert!(allowed >= 20 && limited > 0, "allowed {allowed}, limited {limited}");
    assert!(worst < Duration::from_millis(500), "calm client's worst ping {worst:?}");
    calm.ping().await;
    assert_eq!(client_errors(&server, "rate_limited").await - errors, limited as f64);
    assert_eq!(
        server.metric("wshub_disconnects_total{reason=\"rate_limited\"}").await - closes,
        1.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_topic_cap_answers_too_many_topics() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::with(|c| c.client.max_topics = 3).await;
    let before = client_errors(&server, "too_many_topics").await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    for topic in ["t1", "t2", "t3"] {
        a.subscribe(topic).await;
    }
    let answer = b.request(json!({"type":"subscribe","topic":"t4","id":9})).await;
    assert_eq!(answer["code"], "too_many_topics", "{answer}");
    assert_eq!(answer["id"], 9);
    b.subscribe("t2").await; // an existing topic is no new one
    let answer = a.request(json!({"type":"unsubscribe","topic":"t1","id":"u"})).await;
    assert_eq!(answer, json!({"type":"ack","id":"u"}));
    b.subscribe("t4").await;
    assert_eq!(client_errors(&server, "too_many_topics").await - before, 1.0);
    server.stop().await;
}

/// Sockets in their handshake count per address too (the peer's, before
/// any header): one host holding silent sockets cannot take every slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_from_one_address_leave_room_for_others() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::with(|c| {
        c.gate.max_connections = Some(50);
        c.gate.max_connections_per_ip = 2;
    })
    .await;
    let before = failures(&server, "max_connections_per_ip").await;
    let from = |ip: &str| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        socket.connect(server.ws)
    };
    // 127.0.0.1 opens 50 silent sockets: 2 wait in their handshakes, the
    // rest are answered 429 at once, unread.
    let mut sockets = Vec::new();
    for _ in 0..50 {
        sockets.push(from("127.0.0.1").await.unwrap());
    }
    // Each refusal is counted once its answer is written: when all are
    // counted, every answer is in its socket.
    common::redis::eventually(WAIT, "48 refusals counted", || async {
        failures(&server, "max_connections_per_ip").await - before >= 48.0
    })
    .await;
    assert_eq!(failures(&server, "max_connections_per_ip").await - before, 48.0);
    let mut silent = Vec::new();
    let mut answered = 0;
    for socket in sockets {
        let mut head = [0u8; 64];
        match socket.try_read(&mut head) {
            Ok(n) if n > 0 => {
                let text = String::from_utf8_lossy(&head[..n]).to_string();
                assert!(text.starts_with("HTTP/1.1 429 "), "{text}");
                answered += 1;
            }
            _ => silent.push(socket),
        }
    }
    assert_eq!((silent.len(), answered), (2, 48));
    // Another address still gets in.
    let socket = from("127.0.0.2").await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(server.url(), tokio_tungstenite::MaybeTlsStream::Plain(socket))
        .await
        .expect("another address is served");
    let other = WsClient::welcomed(ws).await;
    assert!(other.id.starts_with("c-"));
    drop(silent);
    server.stop().await;
}

/// A client sending WebSocket pings without end is closed with 4029 past
/// `--client-control-rate` (on by default), as a data flooder is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_closed_with_4029() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::with(|c| c.client.client_control_rate = 100).await;
    let before = server.metric("wshub_disconnects_total{reason=\"rate_limited\"}").await;
    let mut events = server.watch(&[pb::EventKind::Disconnected]).await;
    let mut flooder = common::raw::RawClient::connect(server.ws).await;
    let mut calm = server.client().await;
    for _ in 0..150 {
        if flooder.send(true, 0, common::raw::PING, true, b"").await.is_err() {
            break;
        }
    }
    assert_eq!(
        flooder.close_frame().await,
        (4029, "too many control frames".to_string())
    );
    calm.ping().await;
    flooder.finish().await;
    let event = common::event_for(&mut events, pb::EventKind::Disconnected, &flooder.id).await;
    assert_eq!((event.reason.as_str(), event.code), ("rate_limited", 4029));
    assert_eq!(
        server.metric("wshub_disconnects_total{reason=\"rate_limited\"}").await - before,
        1.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_handshake_ends_at_the_handshake_timeout() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::with(|c| c.gate.handshake_timeout = Duration::from_millis(300)).await;
    let before = failures(&server, "timeout").await;
    use tokio::io::AsyncReadExt;
    let mut silent = tokio::net::TcpStream::connect(server.ws).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, silent.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "the server hangs up: {read:?}");
    assert_eq!(failures(&server, "timeout").await - before, 1.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_can_come_from_a_file() {
    let dir = tempdir();
    let file = dir.join("admin-token");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let server = TestServer::with(|c| c.admin_token_file = Some(file.clone())).await;
    let mut admin = server.admin().await;
    let status = admin.get_stats(pb::GetStatsRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let mut request = tonic::Request::new(pb::GetStatsRequest {});
    request
        .metadata_mut()
        .insert("authorization", "Bearer from-a-file".parse().unwrap());
    admin.get_stats(request).await.expect("the file's token works");
    server.stop().await;

    let mut config = wshub::Config::ephemeral();
    config.admin_token_file = Some(dir.join("missing"));
    let error = wshub::preflight(&config).unwrap_err().to_string();
    assert!(error.contains("cannot read"), "{error}");
}

/// A fresh directory under the target dir, for key and certificate files.
fn tempdir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "security-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
