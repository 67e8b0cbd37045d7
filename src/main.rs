//! The wshub server: `wshub --help` lists every option.

use clap::CommandFactory;
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

/// The flags, the environment and the configuration file. A value that
/// is wrong is reported with where it came from when that was not the
/// command line: the operator looks for it there. `--print-config` prints
/// the result and exits.
fn parse() -> Config {
    let command = Config::command();
    match wshub::config::load(std::env::args_os().collect()) {
        Ok((config, matches)) if config.print_config => {
            print!("{}", wshub::config::print(&matches));
            std::process::exit(0);
        }
        Ok((config, _)) => config,
        Err(wshub::config::LoadError::Args(e)) => name_the_source(e, &command).exit(),
        Err(wshub::config::LoadError::File(message)) => {
            eprintln!("wshub: {message}");
            std::process::exit(2);
        }
    }
}

/// An invalid value that was not on the command line: the error says which
/// environment variable or configuration file it came from.
fn name_the_source(error: clap::Error, command: &clap::Command) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    let long = arg
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_start_matches("--");
    if std::env::args().any(|a| a.starts_with(&format!("--{long}"))) {
        return error;
    }
    let env = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned());
    let source = match env {
        Some(env) if std::env::var_os(&env).is_some() => format!("the environment variable {env}"),
        _ => match config_file() {
            Some(file) => format!("the configuration file {file}"),
            None => return error,
        },
    };
    let text = error.to_string();
    let text = text.trim_start_matches("error: ");
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    clap::Error::raw(
        error.kind(),
        format!("{first}\n  (this value comes from {source})\n{rest}"),
    )
}

/// The configuration file named on the command line or in WSHUB_CONFIG.
fn config_file() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let given = args
        .iter()
        .enumerate()
        .find_map(|(i, a)| match a.strip_prefix("--config") {
            Some("") => args.get(i + 1).cloned(),
            Some(rest) => rest.strip_prefix('=').map(str::to_string),
            None => None,
        });
    given.or_else(|| std::env::var("WSHUB_CONFIG").ok())
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
