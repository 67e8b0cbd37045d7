//! The HTTP upgrade request on the WebSocket port: httparse, RFC 6455's
//! checks, then the gate (origins, proxies' forwarding headers, limits,
//! the client token). Any bytes get a status or "incomplete", never a panic.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use wshub::config::{parse_net, AuthConfig, GateConfig};
use wshub::identity::Verifier;
use wshub::ws::gate::Gate;

fn gate() -> &'static Arc<Gate> {
    static GATE: OnceLock<Arc<Gate>> = OnceLock::new();
    GATE.get_or_init(|| {
        let auth = AuthConfig {
            jwt_secret: Some("fuzz".into()),
            jwt_audience: Some("wshub".into()),
            ..AuthConfig::default()
        };
        let config = GateConfig {
            allowed_origins: vec!["https://app.example.com".into(), "https://*.example.org".into()],
            max_connections: Some(1_000_000),
            max_connections_per_ip: 1_000_000,
            trusted_proxies: vec![parse_net("127.0.0.0/8").unwrap()],
            ..GateConfig::default()
        };
        Arc::new(Gate::new(&config, Verifier::from_config(&auth).unwrap()).unwrap())
    })
}

fuzz_target!(|bytes: &[u8]| {
    let peer: SocketAddr = ([127, 0, 0, 1], 40000).into();
    if let Some(status) = wshub::ws::status_for(bytes, gate(), peer) {
        assert!(
            matches!(status, 101 | 200 | 400 | 401 | 403 | 404 | 405 | 426 | 429 | 431 | 503),
            "unexpected status {status}"
        );
    }
});
