//! Configuration: one clap struct, every option a flag and a `WSHUB_*`
//! environment variable. `wshub --help` is the reference.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

mod file;
pub use file::{load, print, LoadError, SECTIONS};

/// A WebSocket hub managed over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "wshub",
    version,
    about,
    // A flag given twice takes the last value, as most tools do (a wrapper
    // script's defaults, then the operator's own).
    args_override_self = true,
    after_help = "Logging: RUST_LOG sets what is logged (default `info`; e.g. `RUST_LOG=wshub=debug`, \
`RUST_LOG=warn,wshub::backplane=debug`), --log-format how. Every flag can also be set by the \
environment variable shown with it; a flag given on the command line wins."
)]
pub struct Config {
    /// A TOML file with settings, one table per section below (`[listeners]`,
    /// `[server]`, `[limits]`, `[auth]`, `[gate]`, `[backplane]`, `[history]`,
    /// `[admin]`), keys the flags' names: `send-queue-len = 512` in
    /// `[limits]`. Environment variables and flags override it; SIGHUP
    /// re-reads its TLS and token-key settings.
    #[arg(long, env = "WSHUB_CONFIG", help_heading = "Configuration file")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration as a configuration file (secrets
    /// redacted) and exit.
    #[arg(long, help_heading = "Configuration file")]
    pub print_config: bool,

    /// The command line this configuration was read from (empty when it
    /// was made in code): SIGHUP reads it again with the file.
    #[arg(skip)]
    pub args: Vec<std::ffi::OsString>,

    /// Address of the WebSocket listener; clients connect to ws://ADDR/ws.
    #[arg(help_heading = "Listeners", long, env = "WSHUB_WS_ADDR", default_value = "127.0.0.1:8080", value_parser = resolve)]
    pub ws_addr: SocketAddr,

    /// Serve the demo page (a browser client for trying the hub) at / on the WebSocket port.
    #[arg(help_heading = "Listeners", long, env = "WSHUB_DEMO", default_value_t = true, action = clap::ArgAction::Set)]
    pub demo: bool,

    /// Address of the gRPC admin listener. A non-loopback address requires --admin-token.
    #[arg(help_heading = "Listeners", long, env = "WSHUB_ADMIN_ADDR", default_value = "127.0.0.1:50051", value_parser = resolve)]
    pub admin_addr: SocketAddr,

    /// Address of the HTTP listener serving /metrics, /healthz and /readyz.
    #[arg(help_heading = "Listeners", long, env = "WSHUB_METRICS_ADDR", default_value = "127.0.0.1:9464", value_parser = resolve)]
    pub metrics_addr: SocketAddr,

    /// How log lines are written (to stderr): `text` for people, `json`
    /// (one object per line: timestamp, level, target, message and every
    /// field) for log shippers.
    #[arg(help_heading = "Server", long, env = "WSHUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub client: ClientLimits,

    #[command(flatten)]
    pub auth: AuthConfig,

    #[command(flatten)]
    pub gate: GateConfig,

    #[command(flatten)]
    pub cluster: ClusterConfig,

    #[command(flatten)]
    pub history: HistoryArgs,

    /// Server ping interval; also announced to clients in the welcome frame.
    #[arg(help_heading = "Server", long, env = "WSHUB_PING_INTERVAL", default_value = "25s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// A client that sends nothing (no frame, no pong) for this long is closed (ping timeout).
    #[arg(help_heading = "Server", long, env = "WSHUB_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// From the moment the server closes a client (kick, drain, eviction, protocol error),
    /// how long it may take to flush its queue and close frame before the socket is dropped.
    #[arg(help_heading = "Server", long, env = "WSHUB_CLOSE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub close_timeout: Duration,

    /// The longest one socket write may take; a client whose socket takes nothing for
    /// this long is evicted as a slow consumer (4008), even if its queue is not full.
    #[arg(help_heading = "Server", long, env = "WSHUB_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// How long shutdown waits for clients to take their close frames before dropping
    /// them; the whole shutdown ends within this plus one second.
    #[arg(help_heading = "Server", long, env = "WSHUB_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Capacity of the hub's command channel for clients' requests; a client's reader
    /// waits (and stops reading its socket) while it is full. Admin calls have their own.
    #[arg(help_heading = "Server", long, env = "WSHUB_HUB_QUEUE_LEN", default_value_t = 8192)]
    pub hub_queue_len: usize,

    /// Bytes of publishes the hub's channel may hold (e.g. 32MiB), from clients and
    /// other nodes alike; past it publishing clients wait, their sockets unread, until
    /// the hub catches up, and other nodes' publishes are dropped and counted.
    #[arg(help_heading = "Server", long, env = "WSHUB_HUB_QUEUE_BYTES", default_value = "32MiB", value_parser = parse_bytes)]
    pub hub_queue_bytes: usize,

    /// Pending connections the kernel queues on the WebSocket port before accepting
    /// (capped by net.core.somaxconn); large enough that a reconnect storm is not refused.
    #[arg(help_heading = "Server", long, env = "WSHUB_LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,

    /// A connection to the admin or metrics port that sends nothing for this long is
    /// closed (live admin clients answer the server's HTTP/2 pings every 30s). Each
    /// port also holds at most a fixed number of connections (admin 100, metrics 64).
    #[arg(help_heading = "Admin", long, env = "WSHUB_ADMIN_IDLE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub admin_idle_timeout: Duration,

    /// Server-side deadline of every admin call; past it the call answers DEADLINE_EXCEEDED.
    #[arg(help_heading = "Admin", long, env = "WSHUB_ADMIN_DEADLINE", default_value = "5s", value_parser = parse_duration)]
    pub admin_deadline: Duration,

    /// Bearer token every admin call must carry (`authorization: Bearer <token>`).
    #[arg(
        help_heading = "Admin",
        long,
        env = "WSHUB_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "admin_token_file"
    )]
    pub admin_token: Option<String>,

    /// A file holding the admin token (first line), so it is not visible in `ps`.
    #[arg(help_heading = "Admin", long, env = "WSHUB_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// PEM certificate chain for TLS on the admin listener (needs --admin-tls-key).
    #[arg(
        help_heading = "Admin",
        long,
        env = "WSHUB_ADMIN_TLS_CERT",
        requires = "admin_tls_key"
    )]
    pub admin_tls_cert: Option<PathBuf>,

    /// PEM private key for TLS on the admin listener (needs --admin-tls-cert).
    #[arg(
        help_heading = "Admin",
        long,
        env = "WSHUB_ADMIN_TLS_KEY",
        requires = "admin_tls_cert"
    )]
    pub admin_tls_key: Option<PathBuf>,

    /// PEM CA bundle; when set, admin clients must present a certificate it signed.
    #[arg(
        help_heading = "Admin",
        long,
        env = "WSHUB_ADMIN_TLS_CLIENT_CA",
        requires = "admin_tls_cert"
    )]
    pub admin_tls_client_ca: Option<PathBuf>,
}

/// Per-topic history, so a client that reconnects gets what it missed.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "History")]
pub struct HistoryArgs {
    /// Messages kept per topic for clients that reconnect (`subscribe` with `since`);
    /// 0: no history anywhere. Messages on such topics carry an `offset`.
    #[arg(long, env = "WSHUB_HISTORY_SIZE", default_value_t = 0)]
    pub history_size: usize,

    /// How long a kept message stays (e.g. 5m, 1h).
    #[arg(long, env = "WSHUB_HISTORY_TTL", default_value = "5m", value_parser = parse_duration)]
    pub history_ttl: Duration,

    /// Which topics keep history, comma-separated: exact names, `prefix*`, or `*` (all).
    #[arg(long, env = "WSHUB_HISTORY_TOPICS", default_value = "*", value_parser = parse_topic_patterns)]
    pub history_topics: crate::types::TopicPatterns,

    /// Bytes of history the node keeps at most; past it the topics published to longest
    /// ago lose theirs first (counted in wshub_history_trimmed_total{reason="max_bytes"}).
    #[arg(long, env = "WSHUB_HISTORY_MAX_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub history_max_bytes: usize,

    /// Missed messages one reconnect may recover; past it nothing is replayed
    /// (`recovered: false`) and the client starts afresh.
    #[arg(long, env = "WSHUB_RECOVERY_MAX", default_value_t = 300)]
    pub recovery_max: usize,

    /// Which topics have presence (`presence`, `presence_stats`, join/leave events),
    /// comma-separated: exact names, `prefix*`, `*`. Default: none.
    #[arg(long, env = "WSHUB_PRESENCE_TOPICS", default_value = "", value_parser = parse_topic_patterns)]
    pub presence_topics: crate::types::TopicPatterns,

    /// Clients one `presence` answer lists at most (`total` says how many there are).
    #[arg(long, env = "WSHUB_PRESENCE_MAX", default_value_t = 1000)]
    pub presence_max: usize,

    /// How long a user's leave waits: if the same user joins again within it (a
    /// reconnect), neither the leave nor the join is announced.
    #[arg(long, env = "WSHUB_PRESENCE_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub presence_grace: Duration,
}

impl HistoryArgs {
    pub fn hub(&self) -> crate::hub::HistoryConfig {
        crate::hub::HistoryConfig {
            size: self.history_size,
            ttl: self.history_ttl,
            topics: self.history_topics.clone(),
            max_bytes: self.history_max_bytes,
            recovery_max: self.recovery_max,
        }
    }

    pub fn presence(&self) -> crate::hub::PresenceConfig {
        crate::hub::PresenceConfig {
            topics: self.presence_topics.clone(),
            max: self.presence_max,
            grace: self.presence_grace,
        }
    }
}

fn parse_topic_patterns(s: &str) -> Result<crate::types::TopicPatterns, String> {
    crate::types::TopicPatterns::parse(s)
}

/// The node's name and, past one machine, the backplane it shares with other nodes.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Backplane")]
pub struct ClusterConfig {
    /// This node's name (1-64 of A-Za-z0-9_-), in client ids (`c-7@NODE`), `welcome`, the
    /// admin API, logs and metrics. Default: `<hostname>-<random>`, new for every process.
    #[arg(long, env = "WSHUB_NODE_ID", value_parser = parse_node)]
    pub node_id: Option<crate::types::NodeId>,

    /// Redis URL of the backplane shared by the nodes of a cluster:
    /// `redis://[:PASSWORD@]HOST:PORT/DB`, or `rediss://` for TLS. Default: none (a node alone).
    #[arg(long, env = "WSHUB_BACKPLANE", hide_env_values = true)]
    pub backplane: Option<String>,

    /// Whether /readyz and gRPC health report not-ready while the backplane is down
    /// (clients are taken either way, and local delivery goes on).
    #[arg(long, env = "WSHUB_BACKPLANE_REQUIRED", default_value_t = false, action = clap::ArgAction::Set)]
    pub backplane_required: bool,

    /// How long a node's presence lasts in the backplane without a refresh (refreshed every
    /// third of it): a crashed node's clients leave cluster-wide listings within it.
    #[arg(long, env = "WSHUB_BACKPLANE_PRESENCE_TTL", default_value = "15s", value_parser = parse_duration)]
    pub backplane_presence_ttl: Duration,

    /// How often the canary sends a heartbeat through the backplane; a heartbeat not back
    /// by the next one marks the backplane down (`wshub_backplane_up` 0) and resubscribes.
    #[arg(long, env = "WSHUB_BACKPLANE_HEARTBEAT", default_value = "2s", value_parser = parse_duration)]
    pub backplane_heartbeat: Duration,

    /// Messages for other nodes waiting to be sent to the backplane; past it (or while the
    /// backplane is down) they are dropped and counted (`wshub_backplane_dropped_total`).
    #[arg(long, env = "WSHUB_BACKPLANE_QUEUE_LEN", default_value_t = 16384)]
    pub backplane_queue_len: usize,
}

/// Per-client limits, shared by the hub (queues) and the data plane (frames).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct ClientLimits {
    /// Messages a client's send queue holds; a client whose queue is full is evicted (close 4008).
    #[arg(long, env = "WSHUB_SEND_QUEUE_LEN", default_value_t = 256)]
    pub send_queue_len: usize,

    /// Bytes a client's send queue holds (e.g. 1MiB, 512KiB, 65536); past it the client is evicted.
    #[arg(long, env = "WSHUB_SEND_QUEUE_BYTES", default_value = "1MiB", value_parser = parse_bytes)]
    pub send_queue_bytes: usize,

    /// Largest frame or message a client may send (e.g. 64KiB); larger closes with 1009.
    #[arg(long, env = "WSHUB_MAX_MESSAGE_BYTES", default_value = "64KiB", value_parser = parse_bytes)]
    pub max_message_bytes: usize,

    /// Topics one client may be subscribed to at once.
    #[arg(long, env = "WSHUB_MAX_TOPICS_PER_CLIENT", default_value_t = 128)]
    pub max_topics_per_client: usize,

    /// What clients may publish: `all` (to topics and to everyone), `topics` (to topics
    /// only; the production setting) or `none`. Refused publishes answer `publish_disabled`.
    #[arg(long, env = "WSHUB_CLIENT_PUBLISH", value_enum, default_value_t = ClientPublish::All)]
    pub client_publish: ClientPublish,

    /// Requests (of any type) one client may send per second; over it a request is
    /// answered `rate_limited`. 0 turns the limit off.
    #[arg(long, env = "WSHUB_CLIENT_RATE", default_value_t = 0)]
    pub client_rate: u32,

    /// Requests a client may send at once above --client-rate (the token bucket's size);
    /// default: one second's worth.
    #[arg(long, env = "WSHUB_CLIENT_BURST")]
    pub client_burst: Option<u32>,

    /// A client that keeps exceeding --client-rate for this long is closed with 4029.
    #[arg(long, env = "WSHUB_CLIENT_RATE_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub client_rate_grace: Duration,

    /// Control frames (WebSocket pings and pongs) one client may send per second;
    /// one more in the same second closes it with 4029. Apart from --client-rate, and
    /// on by default: no client needs many, and each ping costs the server a pong.
    /// 0 turns the limit off.
    #[arg(long, env = "WSHUB_CLIENT_CONTROL_RATE", default_value_t = 100)]
    pub client_control_rate: u32,

    /// Distinct topics the node holds at once; a subscribe that would create one more
    /// answers `too_many_topics`.
    #[arg(long, env = "WSHUB_MAX_TOPICS", default_value_t = 100_000)]
    pub max_topics: usize,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// An address to listen on: `IP:PORT`, or `HOST:PORT` resolved now (the
/// first address the name resolves to), e.g. `localhost:8080`.
fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("`{s}` is neither IP:PORT nor a HOST:PORT that resolves: {e}"))?;
    addrs.next().ok_or_else(|| format!("`{s}` resolves to no address"))
}

/// What clients may publish (`--client-publish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientPublish {
    /// To topics and to everyone (`true` is accepted, as before).
    #[value(alias = "true")]
    All,
    /// To topics only: a publish without a topic answers `publish_disabled`.
    Topics,
    /// Nothing: every publish answers `publish_disabled` (`false` is accepted, as before).
    #[value(alias = "false")]
    None,
}

/// Client identity: JSON Web Tokens checked before the upgrade. Off unless a key is given.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Auth")]
pub struct AuthConfig {
    /// HS256 secret: clients must present a JWT signed with it (`?token=` or
    /// `Authorization: Bearer`).
    #[arg(long, env = "WSHUB_JWT_SECRET", hide_env_values = true, group = "jwt_key")]
    pub jwt_secret: Option<String>,

    /// A file holding the HS256 secret (its first line), so it is not visible in `ps`.
    #[arg(long, env = "WSHUB_JWT_SECRET_FILE", group = "jwt_key")]
    pub jwt_secret_file: Option<PathBuf>,

    /// A PEM public key (RSA for RS256, EC P-256 for ES256) that client JWTs must be signed for.
    #[arg(long, env = "WSHUB_JWT_PUBLIC_KEY", group = "jwt_key")]
    pub jwt_public_key: Option<PathBuf>,

    /// The `iss` client JWTs must carry (checked when set).
    #[arg(long, env = "WSHUB_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The `aud` client JWTs must carry (checked when set).
    #[arg(long, env = "WSHUB_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew tolerated when checking `exp` and `nbf`.
    #[arg(long, env = "WSHUB_JWT_LEEWAY", default_value = "5s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,

    /// Whether a client whose token expires while connected is closed then (1008 "token expired").
    #[arg(long, env = "WSHUB_JWT_CLOSE_ON_EXPIRY", default_value_t = true, action = clap::ArgAction::Set)]
    pub jwt_close_on_expiry: bool,
}

/// Who may open a connection, checked before the upgrade.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Gate")]
pub struct GateConfig {
    /// Origins browsers may connect from, comma-separated: exact (`https://app.example.com`)
    /// or a subdomain pattern (`https://*.example.com`). Default: any. Others get 403.
    #[arg(long, env = "WSHUB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Clients connected at once; past it upgrades answer 503. Default: the open-file
    /// limit less 256 (kept for the admin and metrics ports and the process's files).
    #[arg(long, env = "WSHUB_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Clients connected at once from one address; past it upgrades answer 429. 0: no limit.
    #[arg(long, env = "WSHUB_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// Proxies (addresses or CIDR blocks, comma-separated) whose X-Forwarded-For or
    /// Forwarded header names the client's address. Default: none (the peer address).
    #[arg(long, env = "WSHUB_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// The header a trusted proxy writes the client's address in: `x-forwarded-for`
    /// (a list, the last untrusted hop counts), `forwarded` (RFC 7239 `for=`), or any
    /// other header holding one address (e.g. `x-real-ip`). Only this one is read.
    #[arg(long, env = "WSHUB_CLIENT_IP_HEADER", default_value = "x-forwarded-for", value_parser = parse_header_name)]
    pub client_ip_header: String,

    /// Sockets one address may hold in their handshakes (before a complete request
    /// head) at once; past it a socket gets 429 at once, unread. Counted on the peer
    /// address; --trusted-proxies are exempt. 0: no limit (--max-connections-per-ip,
    /// when set, still bounds clients and handshakes from one address together).
    #[arg(long, env = "WSHUB_MAX_HANDSHAKES_PER_IP", default_value_t = 256)]
    pub max_handshakes_per_ip: usize,

    /// The longest a client may take to send its HTTP upgrade request (8 KiB, 64 header lines at most).
    #[arg(long, env = "WSHUB_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// PEM certificate chain for wss:// on the WebSocket port (needs --tls-key); reloaded on SIGHUP.
    #[arg(long, env = "WSHUB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for wss:// (needs --tls-cert); reloaded on SIGHUP.
    #[arg(long, env = "WSHUB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            send_queue_len: 256,
            send_queue_bytes: 1 << 20,
            max_message_bytes: 64 << 10,
            max_topics_per_client: 128,
            client_publish: ClientPublish::All,
            client_rate: 0,
            client_burst: None,
            client_rate_grace: Duration::from_secs(10),
            client_control_rate: 100,
            max_topics: 100_000,
        }
    }
}

impl Config {
    /// Checks what clap cannot: combinations that would run an unsafe or broken server.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let admin_token = self.admin_token()?;
        if !self.admin_addr.ip().is_loopback() && admin_token.is_none() {
            return Err(ConfigError::AdminWithoutToken(self.admin_addr));
        }
        let at_least_one = [
            ("--max-topics", self.client.max_topics == 0),
            ("--max-connections", self.gate.max_connections == Some(0)),
            ("--client-burst", self.client.client_burst == Some(0)),
            ("--send-queue-len", self.client.send_queue_len == 0),
            ("--hub-queue-len", self.hub_queue_len == 0),
            ("--listen-backlog", self.listen_backlog == 0),
            ("--backplane-queue-len", self.cluster.backplane_queue_len == 0),
            ("--presence-max", self.history.presence_max == 0),
        ];
        if let Some((flag, _)) = at_least_one.into_iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::Zero(flag));
        }
        if self.hub_queue_bytes < self.client.max_message_bytes {
            return Err(ConfigError::HubQueueBytes);
        }
        // Every duration is added to an `Instant` somewhere: past a year a
        // setting is a mistake, and far past it the sum would overflow. Most
        // must also be longer than zero (`false`: zero is allowed here).
        for (flag, value, nonzero) in [
            ("--ping-interval", self.ping_interval, false),
            ("--idle-timeout", self.idle_timeout, false),
            ("--close-timeout", self.close_timeout, true),
            ("--write-timeout", self.write_timeout, true),
            ("--shutdown-grace", self.shutdown_grace, false),
            ("--admin-deadline", self.admin_deadline, true),
            ("--admin-idle-timeout", self.admin_idle_timeout, true),
            ("--handshake-timeout", self.gate.handshake_timeout, true),
            ("--client-rate-grace", self.client.client_rate_grace, true),
            ("--jwt-leeway", self.auth.jwt_leeway, false),
            ("--backplane-presence-ttl", self.cluster.backplane_presence_ttl, true),
            ("--backplane-heartbeat", self.cluster.backplane_heartbeat, true),
            ("--history-ttl", self.history.history_ttl, true),
            ("--presence-grace", self.history.presence_grace, false),
        ] {
            if nonzero && value.is_zero() {
                return Err(ConfigError::NoTime(flag));
            }
            if value > MAX_DURATION {
                return Err(ConfigError::TooLong(flag));
            }
        }
        if let Some(url) = &self.cluster.backplane {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError::BackplaneUrl);
            }
        }
        if self.history.history_size > 0 {
            if self.history.recovery_max > MAX_RECOVERY {
                return Err(ConfigError::RecoveryMax);
            }
            if self.history.history_max_bytes < self.client.max_message_bytes {
                return Err(ConfigError::HistoryMaxBytes);
            }
        }
        if self.ping_interval.is_zero() || self.idle_timeout <= self.ping_interval {
            return Err(ConfigError::IdleTimeout);
        }
        Ok(())
    }

    /// The admin token, from --admin-token or the first line of --admin-token-file;
    /// `None` when neither is set or it is blank (a blank token is no token).
    pub fn admin_token(&self) -> Result<Option<String>, ConfigError> {
        let token = match &self.admin_token_file {
            Some(path) => Some(read_secret(path).map_err(|source| ConfigError::TokenFile {
                path: path.clone(),
                source,
            })?),
            None => self.admin_token.clone(),
        };
        Ok(token.filter(|t| !t.trim().is_empty()))
    }

    /// The defaults with every listener on an ephemeral loopback port: for tests and embedding.
    pub fn ephemeral() -> Self {
        let mut config = Config::parse_from(["wshub"]);
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        (config.ws_addr, config.admin_addr, config.metrics_addr) = (any, any, any);
        config
    }
}

/// A configuration that would run an unsafe or broken server: the process
/// exits 2 with this one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("refusing to serve the admin API on non-loopback {0} without --admin-token or --admin-token-file")]
    AdminWithoutToken(SocketAddr),
    #[error("--admin-token-file {}: {source}", path.display())]
    TokenFile { path: PathBuf, source: SecretError },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("{0} must be longer than zero")]
    NoTime(&'static str),
    #[error("{0} must be at most a year (365d)")]
    TooLong(&'static str),
    #[error("--hub-queue-bytes must hold at least one --max-message-bytes message")]
    HubQueueBytes,
    #[error("--backplane must be a redis:// or rediss:// URL")]
    BackplaneUrl,
    #[error("--idle-timeout must be longer than a non-zero --ping-interval")]
    IdleTimeout,
    #[error("--recovery-max must be at most 10000")]
    RecoveryMax,
    #[error("--history-max-bytes must hold at least one --max-message-bytes message")]
    HistoryMaxBytes,
}

/// The most missed messages one reconnect may recover.
pub const MAX_RECOVERY: usize = 10_000;

/// The longest any duration setting may be.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a secret file gave no secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read it: {0}")]
    Read(std::io::Error),
    #[error("it is empty")]
    Empty,
}

/// The first line of a secret file, without its line ending.
pub fn read_secret(path: &std::path::Path) -> Result<String, SecretError> {
    let text = std::fs::read_to_string(path).map_err(SecretError::Read)?;
    let line = text.lines().next().unwrap_or("").trim_end();
    if line.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(line.to_string())
}

/// Parses a CIDR block (`10.0.0.0/8`) or a single address (`10.0.0.1`).
pub fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{s}` is neither an address nor a CIDR block"))
}

/// A header name: an HTTP token, compared without regard to case.
pub fn parse_header_name(s: &str) -> Result<String, String> {
    let name = s.trim().to_ascii_lowercase();
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("`{s}` is not an HTTP header name"));
    }
    Ok(name)
}

/// Parses `500ms`, `25s`, `1m` (humantime).
pub fn parse_node(s: &str) -> Result<crate::types::NodeId, String> {
    crate::types::NodeId::parse(s).map_err(|_| "a node id is 1-64 characters of A-Za-z0-9_-".to_string())
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Parses a byte size: a plain number, or one with a suffix K, KB, KiB, M, MB, MiB (all binary).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a byte size like 65536, 64KiB or 1MiB"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        other => return Err(format!("unknown byte unit `{other}` (use K, KiB, M or MiB)")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64KiB"), Ok(65536));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert!(parse_bytes("1GiB").is_err());
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn non_loopback_admin_needs_a_token() {
        let mut config = Config::ephemeral();
        config.admin_addr = "0.0.0.0:50051".parse().unwrap();
        assert!(config.validate().is_err());
        config.admin_token = Some(" \t".into());
        assert!(config.validate().is_err(), "a blank token is no token");
        config.admin_token = Some("secret".into());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn durations_past_a_year_are_refused() {
        let huge = Duration::from_secs(300_000_000_000 * 365 * 24 * 3600);
        for set in [
            |c: &mut Config, d| c.close_timeout = d,
            |c: &mut Config, d| c.idle_timeout = d,
            |c: &mut Config, d| c.shutdown_grace = d,
            |c: &mut Config, d| c.write_timeout = d,
        ] {
            let mut config = Config::ephemeral();
            set(&mut config, huge);
            let error = config.validate().unwrap_err();
            assert!(error.to_string().contains("at most a year"), "{error}");
        }
        let mut config = Config::ephemeral();
        config.shutdown_grace = MAX_DURATION;
        assert!(config.validate().is_ok());
    }
}
