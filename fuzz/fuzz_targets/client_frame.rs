//! A client's text frame: decode (`protocol::parse`) and the data plane's
//! dispatch decision (`claims::check`) under each publish switch, with and
//! without token claims. Every input must become a request or an error
//! frame, never a panic; an error frame must be valid JSON (checked as raw
//! JSON: ids are echoed as sent, and `1e400` is valid JSON no f64 holds).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wshub::config::{AuthConfig, ClientPublish};
use wshub::identity::{Identity, Verifier};
use wshub::protocol;
use wshub::auth::claims;

/// A client whose token allows `news` and `chat.*` and no publishing to everyone.
fn scoped() -> &'static Identity {
    static IDENTITY: OnceLock<Identity> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        let config = AuthConfig {
            jwt_secret: Some("fuzz".into()),
            ..AuthConfig::default()
        };
        let verifier = Verifier::from_config(&config).unwrap().unwrap();
        let claims = serde_json::json!({"sub": "fuzz", "exp": 4_000_000_000u64, "topics": ["news", "chat.*"]});
        let key = jsonwebtoken::EncodingKey::from_secret(b"fuzz").unwrap();
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
        verifier.verify(&token).unwrap()
    })
}

fn valid_json(text: &str) {
    serde_json::from_str::<Box<serde_json::value::RawValue>>(text).expect("error frames are JSON");
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let request = match protocol::parse(text) {
        Ok(request) => request,
        Err(e) => {
            let frame = protocol::error(&e);
            valid_json(frame.as_str());
            return;
        }
    };
    for publish in [ClientPublish::All, ClientPublish::Topics, ClientPublish::None] {
        for identity in [None, Some(scoped())] {
            if let Err(e) = claims::check(&request, publish, identity) {
                let frame = protocol::error(&e);
                valid_json(frame.as_str());
            }
        }
    }
});
