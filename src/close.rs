//! Why a connection ends: the close codes clients see and the reasons
//! operators count (`wshub_disconnects_total{reason}`, admin events).

/// WebSocket close codes wshub sends.
pub mod code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const TOO_LARGE: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const SERVICE_RESTART: u16 = 1012;
    pub const KICKED: u16 = 4000;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const HISTORY_LOST: u16 = 4010;
    pub const RATE_LIMITED: u16 = 4029;
}

/// The longest close reason: a control frame's 125 bytes less the 2-byte code.
pub const MAX_REASON_BYTES: usize = 123;

/// The one reason a connection ended; the first cause recorded wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    ClientClose,
    ReadError,
    PingTimeout,
    SlowConsumer,
    Kicked,
    ProtocolError,
    TooLarge,
    Shutdown,
    Drain,
    TokenExpired,
    RateLimited,
    InternalError,
    /// Writing to the socket failed (before: counted as `read_error`).
    WriteError,
    /// In a cluster, messages on a topic with history could not be fetched
    /// to fill a gap (or the history was lost): the client resubscribes
    /// with `since` and learns whether it can recover.
    HistoryLost,
}

impl DisconnectReason {
    pub const ALL: [DisconnectReason; 14] = [
        Self::ClientClose,
        Self::ReadError,
        Self::PingTimeout,
        Self::SlowConsumer,
        Self::Kicked,
        Self::ProtocolError,
        Self::TooLarge,
        Self::Shutdown,
        Self::Drain,
        Self::TokenExpired,
        Self::RateLimited,
        Self::InternalError,
        Self::WriteError,
        Self::HistoryLost,
    ];

    /// The label value in metrics and the `reason` of admin events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientClose => "client_close",
            Self::ReadError => "read_error",
            Self::PingTimeout => "ping_timeout",
            Self::SlowConsumer => "slow_consumer",
            Self::Kicked => "kicked",
            Self::ProtocolError => "protocol_error",
            Self::TooLarge => "too_large",
            Self::Shutdown => "shutdown",
            Self::Drain => "drain",
            Self::TokenExpired => "token_expired",
            Self::RateLimited => "rate_limited",
            Self::InternalError => "internal_error",
            Self::WriteError => "write_error",
            Self::HistoryLost => "history_lost",
        }
    }
}

/// Why an HTTP request on the WebSocket port was not upgraded: the `reason`
/// of `wshub_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// 404: a path other than `/ws`.
    NotFound,
    /// 426: not a WebSocket request.
    UpgradeRequired,
    /// 426: a WebSocket version other than 13.
    UnsupportedVersion,
    /// 400 (and 405): a malformed request.
    BadRequest,
    /// 431: a request head too large.
    HeadersTooLarge,
    /// 503: draining or shutting down.
    Unavailable,
    /// 403: an `Origin` not in --allowed-origins.
    Origin,
    /// 401: no valid client token.
    Auth,
    /// 503: --max-connections reached.
    MaxConnections,
    /// 429: --max-connections-per-ip reached.
    MaxConnectionsPerIp,
    /// No complete request in time.
    Timeout,
    /// The TLS handshake failed (wss:// only).
    Tls,
    /// The socket failed or closed during the handshake.
    Io,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 13] = [
        Self::NotFound,
        Self::UpgradeRequired,
        Self::UnsupportedVersion,
        Self::BadRequest,
        Self::HeadersTooLarge,
        Self::Unavailable,
        Self::Origin,
        Self::Auth,
        Self::MaxConnections,
        Self::MaxConnectionsPerIp,
        Self::Timeout,
        Self::Tls,
        Self::Io,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::UpgradeRequired => "upgrade_required",
            Self::UnsupportedVersion => "unsupported_version",
            Self::BadRequest => "bad_request",
            Self::HeadersTooLarge => "headers_too_large",
            Self::Unavailable => "unavailable",
            Self::Origin => "origin",
            Self::Auth => "auth",
            Self::MaxConnections => "max_connections",
            Self::MaxConnectionsPerIp => "max_connections_per_ip",
            Self::Timeout => "timeout",
            Self::Tls => "tls",
            Self::Io => "io",
        }
    }
}

/// How the server ends a connection: the reason it counts and, when the
/// server speaks first, the close frame it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    pub reason: DisconnectReason,
    /// `None` when the peer closed or the socket failed: nothing to send.
    pub frame: Option<(u16, String)>,
}

impl Closing {
    pub fn silent(reason: DisconnectReason) -> Self {
        Self { reason, frame: None }
    }

    pub fn with_frame(reason: DisconnectReason, code: u16, text: impl Into<String>) -> Self {
        Self {
            reason,
            frame: Some((code, text.into())),
        }
    }

    pub fn slow_consumer() -> Self {
        Self::with_frame(DisconnectReason::SlowConsumer, code::SLOW_CONSUMER, "slow consumer")
    }

    pub fn shutdown() -> Self {
        Self::with_frame(DisconnectReason::Shutdown, code::GOING_AWAY, "server shutting down")
    }

    pub fn drain() -> Self {
        Self::with_frame(DisconnectReason::Drain, code::SERVICE_RESTART, "service restart")
    }

    /// Silent (no frame, no pong) for `--idle-timeout`.
    pub fn ping_timeout() -> Self {
        Self::with_frame(DisconnectReason::PingTimeout, code::NORMAL, "ping timeout")
    }

    pub fn token_expired() -> Self {
        Self::with_frame(DisconnectReason::TokenExpired, code::POLICY_VIOLATION, "token expired")
    }

    pub fn rate_limited() -> Self {
        Self::with_frame(DisconnectReason::RateLimited, code::RATE_LIMITED, "rate limited")
    }

    /// Over `--client-control-rate`: pings or pongs faster than any client needs.
    pub fn control_flood() -> Self {
        Self::with_frame(
            DisconnectReason::RateLimited,
            code::RATE_LIMITED,
            "too many control frames",
        )
    }

    /// A topic's subscribers on this node missed messages the stream could
    /// not give back: they come back with `since` to learn what they lost.
    pub fn history_lost() -> Self {
        Self::with_frame(
            DisconnectReason::HistoryLost,
            code::HISTORY_LOST,
            "missed messages; resubscribe with since",
        )
    }

    /// A bug in the server ended the connection (a panic, caught).
    pub fn internal_error() -> Self {
        Self::with_frame(DisconnectReason::InternalError, code::INTERNAL_ERROR, "internal error")
    }

    pub fn code(&self) -> u16 {
        self.frame.as_ref().map_or(0, |(code, _)| *code)
    }
}

#[cfg(test)]
mod tests {
    use super::DisconnectReason;

    #[test]
    fn all_reasons_are_listed_in_declaration_order() {
        for (i, reason) in DisconnectReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{}", reason.as_str());
        }
    }
}
