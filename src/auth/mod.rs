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
