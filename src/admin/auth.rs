//! Bearer-token check for admin calls.
//!
//! Contract: with a token configured, every call must carry metadata
//! `authorization: Bearer <token>`; anything else is UNAUTHENTICATED. The
//! comparison takes the same time wherever the tokens differ.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use super::AdminError;

/// How often a refused call is logged at most; the refusals in between are
/// counted in the next line.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// An interceptor enforcing `token`, or letting everything through when it is `None`.
/// A refused call is logged (at most once per [`LOG_EVERY`], with the
/// caller's address and how many were refused since the last line).
pub fn check(token: Option<String>) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    let expected = token.map(|t| format!("Bearer {t}").into_bytes());
    let refused = Arc::new(Mutex::new(Throttle::default()));
    move |request: Request<()>| {
        let Some(expected) = &expected else { return Ok(request) };
        let given = request.metadata().get("authorization").map(|v| v.as_bytes());
        if bool::from(given.unwrap_or(b"").ct_eq(expected)) {
            return Ok(request);
        }
        let caller = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        if let Some(refused) = refused.lock().unwrap_or_else(|e| e.into_inner()).due() {
            let why = if given.is_some() { "a wrong token" } else { "no token" };
            tracing::warn!(%caller, refused, "admin: refused a call with {why} (UNAUTHENTICATED); at most one such line every 10 s, `refused` counts them");
        }
        Err(AdminError::Unauthenticated.into())
    }
}

/// A warning logged at most once per [`LOG_EVERY`], counting what it
/// stood for in between.
#[derive(Default)]
pub(super) struct Throttle {
    logged: Option<Instant>,
    since: u64,
}

impl Throttle {
    /// One more occurrence: `Some(occurrences since the last line)` when a
    /// line is due now.
    pub(super) fn due(&mut self) -> Option<u64> {
        self.since += 1;
        if self.logged.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return None;
        }
        self.logged = Some(Instant::now());
        Some(std::mem::take(&mut self.since))
    }
}
