//! Admission: who may connect and what a client may do once connected. The
//! rules live here, apart from the counters that apply them (the data
//! plane's gate) and from the connection that asks:
//!
//! - [`identity`]: client tokens (JWT) and what they grant;
//! - [`origin`]: the browser origins allowed;
//! - [`forwarded`]: the client's address behind trusted proxies;
//! - [`claims`]: what a request may do under the publish switch and the
//!   token's claims.

pub mod claims;
pub mod forwarded;
pub mod identity;
pub mod origin;

use std::path::PathBuf;

/// Why the admission material in the configuration cannot be used: found
/// at start (the process exits 2) or on a reload (the old one stays).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is empty", path.display())]
    EmptyFile { path: PathBuf },
    #[error("the JWT secret is empty")]
    EmptySecret,
    #[error("JWT secret: {0}")]
    Secret(jsonwebtoken::errors::Error),
    #[error("{} is neither an RSA nor an EC public key in PEM", path.display())]
    NotAPublicKey { path: PathBuf },
    #[error("--jwt-issuer and --jwt-audience need a key (--jwt-secret, --jwt-secret-file or --jwt-public-key)")]
    ClaimsWithoutKey,
    #[error("origin pattern `{rule}`: {why}")]
    Origin { rule: String, why: &'static str },
}
