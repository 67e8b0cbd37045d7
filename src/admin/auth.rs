//! Bearer-token check for admin calls.
//!
//! Contract: with a token configured, every call must carry metadata
//! `authorization: Bearer <token>`; anything else is UNAUTHENTICATED. The
//! comparison takes the same time wherever the tokens differ.

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use super::AdminError;

/// An interceptor enforcing `token`, or letting everything through when it is `None`.
pub fn check(token: Option<String>) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    let expected = token.map(|t| format!("Bearer {t}").into_bytes());
    move |request: Request<()>| {
        let Some(expected) = &expected else { return Ok(request) };
        let given = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        if bool::from(given.ct_eq(expected)) {
            Ok(request)
        } else {
            Err(AdminError::Unauthenticated.into())
        }
    }
}
