//! Reaching the admin API, and saying plainly why it failed: which address,
//! and whether nothing listens there, TLS is mismatched or the token was
//! refused.

use std::error::Error as _;
use std::path::Path;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};
use wshub::admin::pb::admin_client::AdminClient;

pub type Client = AdminClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

/// How long connecting (TCP, and TLS for https://) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Adds the bearer token, when there is one, to every call.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Where the admin API is, and how to talk to it.
pub struct Target {
    url: String,
    tls: Option<ClientTlsConfig>,
    /// Whether a client certificate is presented (mutual TLS).
    identity: bool,
    auth: Auth,
}

/// How to prove who is calling: a bearer token and, for an admin port with
/// `--admin-tls-client-ca`, a client certificate and its key.
pub struct Credentials<'a> {
    pub token: Option<&'a str>,
    pub ca: Option<&'a Path>,
    pub cert: Option<(&'a Path, &'a Path)>,
}

impl Target {
    pub fn new(addr: &str, credentials: Credentials<'_>) -> Result<Target, String> {
        let Credentials { token, ca, cert } = credentials;
        let read = |path: &Path| std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let tls = match url.starts_with("https://") {
            false => None,
            true => {
                let mut tls = ClientTlsConfig::new().with_native_roots();
                if let Some(ca) = ca {
                    tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
                }
                if let Some((cert, key)) = cert {
                    tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                Some(tls)
            }
        };
        if cert.is_some() && tls.is_none() {
            return Err(format!(
                "--cert and --key are for an https:// admin port; {url} is plain text"
            ));
        }
        let auth = match token {
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| "the token has characters a header cannot carry")?,
            ),
            None => None,
        };
        Ok(Target {
            url,
            tls,
            identity: cert.is_some(),
            auth: Auth(auth),
        })
    }

    /// The address as the operator should read it in messages.
    pub fn shown(&self) -> &str {
        &self.url
    }

    pub async fn connect(&self) -> Result<Client, Failure> {
        let mut endpoint = Endpoint::from_shared(self.url.clone()).map_err(|e| Failure::Address(e.to_string()))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| Failure::Address(e.to_string()))?;
        }
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|e| Failure::Transport(chain(&e)))?;
        Ok(AdminClient::with_interceptor(channel, self.auth.clone()))
    }

    fn has_token(&self) -> bool {
        self.auth.0.is_some()
    }
}

/// Why a call failed.
pub enum Failure {
    /// The address does not parse.
    Address(String),
    /// Connecting failed; every cause in the chain, outermost first.
    Transport(String),
    /// The server (or the channel) answered a call with an error.
    Status(Status),
}

impl Failure {
    /// One line for the operator.
    pub fn describe(self, target: &Target) -> String {
        let at = target.shown();
        let tls = target.tls.is_some();
        let transport = |causes: &str| {
            let lower = causes.to_lowercase();
            if lower.contains("connection refused") {
                format!(
                    "nothing listens at {at} (connection refused); is the node running, and is this its --admin-addr?"
                )
            } else if lower.contains("timed out") || lower.contains("elapsed") {
                format!("no answer from {at} within {CONNECT_TIMEOUT:?} (a firewall, or a wrong host)")
            } else if tls
                && (lower.contains("corrupt message")
                    || lower.contains("invalidcontenttype")
                    || lower.contains("wrong version"))
            {
                format!("TLS failed with {at}: it does not speak TLS; use http:// (or host:port) for a plain-text admin port ({causes})")
            } else if tls && refused_after_handshake(&lower) {
                // TLS 1.3: the client's side of the handshake is done before
                // the server checks its certificate; a refusal shows as an
                // alert or the connection closed under the first call.
                if target.identity {
                    format!("TLS failed with {at}: it refused this client certificate (not signed by its --admin-tls-client-ca, or expired) ({causes})")
                } else {
                    format!("TLS failed with {at}: it closed the connection after the handshake, which is how an admin port with --admin-tls-client-ca refuses a caller without a client certificate; pass --cert and --key ({causes})")
                }
            } else if tls && (lower.contains("certificate") || lower.contains("unknownissuer")) {
                format!("TLS failed with {at}: its certificate is not trusted; pass the CA with --ca ({causes})")
            } else if !tls && plain_closed(&lower) && speaks_http1(at) {
                not_the_admin_api(at)
            } else if !tls && plain_closed(&lower) {
                format!(
                    "{at} closed the connection: if its admin port uses TLS, use https://{} with --ca ({causes})",
                    at.trim_start_matches("http://")
                )
            } else {
                format!("cannot reach {at}: {causes}")
            }
        };
        match self {
            Failure::Address(e) => format!("bad address {at}: {e}"),
            Failure::Transport(causes) => transport(&causes),
            Failure::Status(status) => match status.code() {
                Code::Unauthenticated if target.has_token() => {
                    format!("{at} refused the admin token: {}", status.message())
                }
                Code::Unauthenticated => {
                    format!("{at} needs an admin token: pass --token or set WSHUB_ADMIN_TOKEN")
                }
                // The channel's own failures arrive as UNAVAILABLE/UNKNOWN with a transport cause.
                Code::Unavailable | Code::Unknown | Code::Internal if status.source().is_some() => {
                    transport(&chain(&status))
                }
                // An HTTP server that is not gRPC (the metrics port speaks
                // HTTP/2 too, and answers 404).
                _ if status.message().contains("grpc-status header missing") => not_the_admin_api(at),
                // A connection closed under the call (how an mTLS port may
                // refuse a certificate after the handshake).
                Code::Cancelled => transport(&chain(&status)),
                _ => status.message().to_string(),
            },
        }
    }
}

/// Whether a plain-text connection broke under HTTP/2: the peer closed
/// it, or spoke something else.
fn plain_closed(lower: &str) -> bool {
    [
        "connection reset",
        "broken pipe",
        "frame",
        "h2 protocol",
        "connection closed",
    ]
    .iter()
    .any(|k| lower.contains(k))
}

/// The operator pointed wshubctl at another port of the node (or another
/// HTTP server).
fn not_the_admin_api(at: &str) -> String {
    format!("{at} is an HTTP server, not the admin API: the WebSocket or metrics port? The admin API listens on the node's --admin-addr (default 127.0.0.1:50051)")
}

/// Whether `at` (http://host:port) answers a plain HTTP/1.1 request with
/// an HTTP/1 status line, within a second each way: a WebSocket port does.
fn speaks_http1(at: &str) -> bool {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let Some(addr) = at
        .strip_prefix("http://")
        .and_then(|hostport| hostport.to_socket_addrs().ok()?.next())
    else {
        return false;
    };
    let probe = || -> std::io::Result<bool> {
        let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.set_write_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(b"HEAD / HTTP/1.1\r\nHost: wshubctl\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 8];
        stream.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1."))
    };
    probe().unwrap_or(false)
}

/// Whether a TLS connection was refused once the handshake was done: an
/// alert about the client's certificate, or the connection closed.
fn refused_after_handshake(lower: &str) -> bool {
    [
        "certificaterequired",
        "certificate required",
        "unknownca",
        "unknown ca",
        "badcertificate",
        "decrypterror",
        "broken pipe",
        "connection reset",
        "connection closed",
        "operation was canceled",
    ]
    .iter()
    .any(|k| lower.contains(k))
}

/// An error and its causes, outermost first: "a: b: c".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}
