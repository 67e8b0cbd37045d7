//! The configuration file (`--config FILE`, `WSHUB_CONFIG`): TOML with the
//! flags' own names, one table per `--help` section (`[listeners]`,
//! `[server]`, `[limits]`, `[auth]`, `[gate]`, `[backplane]`, `[history]`,
//! `[admin]`). The file is read under the environment and the command line:
//! a setting in the file is used unless its environment variable is set or
//! its flag is given. An unknown table or key, or a key in the wrong table,
//! is an error that names it.
//!
//! `--print-config` prints the effective configuration (every setting,
//! wherever it came from) in the same form, secrets redacted, so a file
//! can be started from it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgMatches, Command, CommandFactory, FromArgMatches};

use super::Config;

/// The file's tables, in `--help`'s order of sections.
pub const SECTIONS: [&str; 8] = [
    "listeners",
    "server",
    "limits",
    "auth",
    "gate",
    "backplane",
    "history",
    "admin",
];

/// Why the configuration could not be read.
#[derive(Debug)]
pub enum LoadError {
    /// The command line or the environment (clap's own message, exit 2).
    Args(clap::Error),
    /// The configuration file.
    File(String),
}

/// The configuration from `args` (the program name first), the
/// environment and, when one is named, the configuration file; with the
/// matches it was built from (for `--print-config`).
pub fn load(args: Vec<OsString>) -> Result<(Config, ArgMatches), LoadError> {
    let command = Config::command();
    let args_kept = args.clone();
    let first = command.clone().try_get_matches_from(&args).map_err(LoadError::Args)?;
    let matches = match first.get_one::<PathBuf>("config") {
        None => first,
        Some(path) => {
            let mut all = vec![args.first().cloned().unwrap_or_else(|| "wshub".into())];
            all.extend(file_args(&command, path).map_err(LoadError::File)?);
            all.extend(args.into_iter().skip(1));
            command.clone().try_get_matches_from(all).map_err(LoadError::Args)?
        }
    };
    let mut config = Config::from_arg_matches(&matches).map_err(|e| LoadError::Args(e.with_cmd(&command)))?;
    config.args = args_kept;
    Ok((config, matches))
}

/// Whether a flag can be set in the file (not `--config` itself, nor
/// `--print-config`, `--help`, `--version`).
fn settable(arg: &Arg) -> bool {
    !matches!(arg.get_id().as_str(), "config" | "print_config" | "help" | "version") && arg.get_long().is_some()
}

fn section_of(arg: &Arg) -> String {
    arg.get_help_heading().unwrap_or_default().to_lowercase()
}

/// The file's settings as flags (`--name value`), leaving out those whose
/// environment variable is set: the environment wins over the file.
fn file_args(command: &Command, path: &Path) -> Result<Vec<OsString>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read --config {shown}: {e}"))?;
    let table: toml::Table = text.parse().map_err(|e| format!("--config {shown}: {e}"))?;
    let mut out = Vec::new();
    for (section, value) in table {
        let toml::Value::Table(settings) = value else {
            let hint = match command.get_arguments().find(|a| a.get_long() == Some(section.as_str())) {
                Some(arg) if settable(arg) => format!(": it belongs in [{}]", section_of(arg)),
                _ => String::new(),
            };
            return Err(format!(
                "--config {shown}: `{section}` is outside any table{hint}; settings go in [{}]",
                SECTIONS.join("], [")
            ));
        };
        if !SECTIONS.contains(&section.as_str()) {
            return Err(format!(
                "--config {shown}: unknown table [{section}]; the tables are [{}]",
                SECTIONS.join("], [")
            ));
        }
        for (key, value) in settings {
            let Some(arg) = command
                .get_arguments()
                .find(|a| settable(a) && a.get_long() == Some(key.as_str()))
            else {
                return Err(format!(
                    "--config {shown}: unknown setting `{key}` in [{section}] (`wshub --help` lists every setting, by section)"
                ));
            };
            let belongs = section_of(arg);
            if belongs != section {
                return Err(format!(
                    "--config {shown}: `{key}` belongs in [{belongs}], not [{section}]"
                ));
            }
            let from_env = arg.get_env().is_some_and(|env| std::env::var_os(env).is_some());
            if from_env {
                continue;
            }
            out.push(OsString::from(format!("--{key}")));
            out.push(OsString::from(
                scalar(&value, arg).map_err(|e| format!("--config {shown}: [{section}] {key}: {e}"))?,
            ));
        }
    }
    Ok(out)
}

/// A TOML value as the flag's text: arrays of scalars joined by the flag's
/// delimiter.
fn scalar(value: &toml::Value, arg: &Arg) -> Result<String, String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(items) => {
            let Some(delimiter) = arg.get_value_delimiter() else {
                return Err("takes one value, not a list".into());
            };
            let items: Result<Vec<String>, String> = items.iter().map(|v| scalar(v, arg)).collect();
            items?.join(&delimiter.to_string())
        }
        toml::Value::Table(_) => return Err("takes a value, not a table".into()),
    })
}

/// The effective configuration as a configuration file: every setting in
/// its table, secrets (the flags whose environment values `--help` hides)
/// redacted, settings without a value as comments.
pub fn print(matches: &ArgMatches) -> String {
    let command = Config::command();
    let mut out = String::from(
        "# wshub --print-config: the effective configuration (flags, environment, --config file, defaults)\n",
    );
    for section in SECTIONS {
        out.push_str(&format!("\n[{section}]\n"));
        for arg in command
            .get_arguments()
            .filter(|a| settable(a) && section_of(a) == section)
        {
            let key = arg.get_long().unwrap_or_default();
            let values: Vec<String> = matches
                .get_raw(arg.get_id().as_str())
                .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            if values.is_empty() {
                out.push_str(&format!("# {key} = (not set)\n"));
                continue;
            }
            let value = if arg.is_hide_env_values_set() {
                toml::Value::String("<redacted>".into()).to_string()
            } else if arg.get_value_delimiter().is_some() {
                let items: Vec<String> = values.iter().map(|v| literal(v)).collect();
                format!("[{}]", items.join(", "))
            } else {
                literal(&values.join(","))
            };
            out.push_str(&format!("{key} = {value}\n"));
        }
    }
    out
}

/// A value as TOML: whole numbers and booleans bare, everything else a string.
fn literal(value: &str) -> String {
    if value.parse::<i64>().is_ok() || value == "true" || value == "false" {
        value.to_string()
    } else {
        toml::Value::String(value.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_file(text: &str) -> Result<Config, String> {
        let path = std::env::temp_dir().join(format!("wshub-config-{}-{}.toml", std::process::id(), text.len()));
        std::fs::write(&path, text).unwrap();
        let args = vec!["wshub".into(), "--config".into(), path.clone().into_os_string()];
        let loaded = load(args).map(|(c, _)| c).map_err(|e| match e {
            LoadError::Args(e) => e.to_string(),
            LoadError::File(e) => e,
        });
        let _ = std::fs::remove_file(path);
        loaded
    }

    #[test]
    fn settings_land_where_the_flags_would_put_them() {
        let config = load_file(
            "[limits]\nsend-queue-len = 512\nmax-message-bytes = \"1MiB\"\n\n[gate]\nallowed-origins = [\"https://a.example\", \"https://b.example\"]\n\n[listeners]\ndemo = false\n",
        )
        .unwrap();
        assert_eq!(config.client.send_queue_len, 512);
        assert_eq!(config.client.max_message_bytes, 1 << 20);
        assert_eq!(config.gate.allowed_origins.len(), 2);
        assert!(!config.demo);
    }

    #[test]
    fn unknown_and_misplaced_keys_are_named() {
        let e = load_file("[limits]\nsend-queue-lenn = 1\n").unwrap_err();
        assert!(e.contains("unknown setting `send-queue-lenn` in [limits]"), "{e}");
        let e = load_file("[limits]\nws-addr = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(e.contains("`ws-addr` belongs in [listeners], not [limits]"), "{e}");
        let e = load_file("[tls]\ntls-cert = \"x\"\n").unwrap_err();
        assert!(e.contains("unknown table [tls]"), "{e}");
        let e = load_file("ws-addr = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(e.contains("it belongs in [listeners]"), "{e}");
        let e = load_file("[limits]\nsend-queue-len = \"many\"\n").unwrap_err();
        assert!(e.contains("send-queue-len"), "a bad value names its flag: {e}");
    }
}
