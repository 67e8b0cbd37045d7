//! The wshub server: parse config, set up logging, bind, run.

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wshub::{Config, Listeners};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
            eprintln!("wshub: cannot bind: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    tracing::info!(
        ws = %listeners.ws.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %listeners.admin.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        metrics = %listeners.metrics.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "listening"
    );
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
