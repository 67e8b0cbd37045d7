//! The wshub server: `wshub --help` lists every option.

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;
use wshub::config::LogFormat;
use wshub::{Config, Listeners};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
    }
    // Flags and TLS files are checked before anything is bound or served.
    if let Err(e) = wshub::preflight(&config) {
        eprintln!("wshub: {e}");
        return std::process::ExitCode::from(2);
    }
    // Signal handlers before anything listens: a SIGTERM that arrives as
    // soon as the node accepts clients is a graceful shutdown.
    let shutdown = wshub::shutdown::signal();
    // One socket per client: take the hard file limit, as Go programs do.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
    let listeners = match Listeners::bind(&config).await {
        Ok(listeners) => listeners,
        Err(e) => {
            eprintln!("wshub: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    announce(&listeners, &config);
    match wshub::run(listeners, config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e @ wshub::Error::TaskEnded(_)) => {
            eprintln!("wshub: {e}");
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("wshub: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The flags and environment. A value that came from an environment
/// variable and is wrong is reported with the variable's name, not only
/// the flag's: the operator looks for it where it was set.
fn parse() -> Config {
    let command = Config::command();
    let parsed = command
        .clone()
        .try_get_matches()
        .and_then(|matches| Config::from_arg_matches(&matches));
    match parsed {
        Ok(config) => config,
        Err(e) => name_the_variable(e.with_cmd(&command), &command).exit(),
    }
}

/// An invalid value that was not on the command line but in the
/// environment: the error says which variable.
fn name_the_variable(error: clap::Error, command: &clap::Command) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    let long = arg
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_start_matches("--");
    let from_env = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .filter(|env| {
            std::env::var_os(env).is_some() && !std::env::args().any(|a| a.starts_with(&format!("--{long}")))
        });
    match from_env {
        Some(env) => clap::Error::raw(error.kind(), {
            let text = error.to_string();
            let text = text.trim_start_matches("error: ");
            let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
            format!("{first}\n  (this value comes from the environment variable {env})\n{rest}")
        }),
        None => error,
    }
}

/// Says where to go: the bound addresses, and the URLs to open.
fn announce(listeners: &Listeners, config: &Config) {
    let bound = |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let host = |l: &tokio::net::TcpListener| match l.local_addr() {
        Ok(a) if a.ip().is_unspecified() => format!("localhost:{}", a.port()),
        Ok(a) => a.to_string(),
        Err(_) => String::new(),
    };
    let tls = config.gate.tls_cert.is_some();
    let ws_url = format!("{}://{}/ws", if tls { "wss" } else { "ws" }, host(&listeners.ws));
    let demo_url = if config.demo {
        format!("{}://{}/", if tls { "https" } else { "http" }, host(&listeners.ws))
    } else {
        "off".to_string()
    };
    let metrics_url = format!("http://{}/metrics", host(&listeners.metrics));
    tracing::info!(
        ws = %bound(&listeners.ws),
        admin = %bound(&listeners.admin),
        metrics = %bound(&listeners.metrics),
        %ws_url,
        %demo_url,
        %metrics_url,
        "listening"
    );
}
