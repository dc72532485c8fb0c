//! The optional TOML configuration file and the old runner's variable names.
//!
//! Precedence: flags, then environment variables, then the file, then the
//! built-in defaults. The file's values become the arguments' defaults, so clap
//! keeps applying flags and environment variables over them.

use std::{ffi::OsString, path::PathBuf};

use anyhow::{Context, bail};

/// Turns an old variable's value into ours.
type Convert = fn(&str) -> anyhow::Result<Option<String>>;

/// Variables of the old runner, accepted as aliases: (old name, our variable,
/// how to turn the old value into ours).
const ALIASES: &[(&str, &str, Convert)] = &[
    ("SQLALCHEMY_DATABASE_URI", "DATABASE_URL", |value| {
        database_url(value).map(Some)
    }),
    ("SERVER_NAME", "CORRAL_HTTP", listen_address),
];

/// Applies the config file (`--config` / `CORRAL_CONFIG`) and the aliases to the
/// argument definitions.
pub(crate) fn apply(
    mut command: clap::Command,
    args: &[OsString],
) -> anyhow::Result<clap::Command> {
    if let Some(path) = config_path(args) {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read the config file {}", path.display()))?;
        let table: toml::Table = text.parse().map_err(|error: toml::de::Error| {
            anyhow::anyhow!(
                "invalid config file {}: {}",
                path.display(),
                error.message()
            )
        })?;
        for (key, value) in &table {
            let value = match value {
                toml::Value::String(text) => text.clone(),
                toml::Value::Integer(number) => number.to_string(),
                toml::Value::Boolean(flag) => flag.to_string(),
                toml::Value::Array(items) => items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .with_context(|| {
                        format!(
                            "config file {}: `{key}` must be a list of strings",
                            path.display()
                        )
                    })?
                    .join(":"),
                _ => bail!(
                    "config file {}: `{key}` must be a string, a number, a boolean or a list of strings",
                    path.display()
                ),
            };
            let mut known = false;
            command = set_default(command, key, &value, &mut known);
            if !known {
                bail!("config file {}: unknown key `{key}`", path.display());
            }
        }
    }
    for (old, ours, convert) in ALIASES {
        if std::env::var_os(ours).is_some() {
            continue;
        }
        let Ok(value) = std::env::var(old) else {
            continue;
        };
        let Some(value) = convert(&value).with_context(|| format!("invalid {old}"))? else {
            continue;
        };
        let id = arg_id_for_env(&command, ours);
        if let Some(id) = id {
            let mut known = false;
            command = set_default(command, &id, &value, &mut known);
        }
    }
    Ok(command)
}

/// `--config FILE` from the arguments, else `CORRAL_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(value) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(value));
        }
    }
    std::env::var_os("CORRAL_CONFIG").map(PathBuf::from)
}

/// Sets the default of every argument `key` (in any subcommand) to `value`.
fn set_default(command: clap::Command, key: &str, value: &str, known: &mut bool) -> clap::Command {
    let key = key.replace('-', "_");
    let value = value.to_owned();
    let mut command = command;
    if command
        .get_arguments()
        .any(|arg| arg.get_id() == key.as_str())
    {
        *known = true;
        let value = value.clone();
        command = command.mut_arg(key.clone(), move |arg| arg.default_value(value));
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    for name in names {
        let key = key.clone();
        let value = value.clone();
        let mut found = false;
        command = command.mut_subcommand(name, |sub| set_default(sub, &key, &value, &mut found));
        *known |= found;
    }
    command
}

fn arg_id_for_env(command: &clap::Command, env: &str) -> Option<String> {
    for arg in command.get_arguments() {
        if arg.get_env().is_some_and(|name| name == env) {
            return Some(arg.get_id().to_string());
        }
    }
    command
        .get_subcommands()
        .find_map(|sub| arg_id_for_env(sub, env))
}

/// SQLAlchemy's `postgresql+psycopg2://…` or `sqlite:///path` as our database URL.
/// SQLAlchemy's `sqlite:///x.db` is the relative path `x.db`, `sqlite:////x.db`
/// the absolute `/x.db`; sqlx reads `sqlite://x.db` and `sqlite:///x.db` so.
fn database_url(value: &str) -> anyhow::Result<String> {
    let (scheme, rest) = value
        .split_once("://")
        .context("expected a PostgreSQL or SQLite URL")?;
    let scheme = scheme.split('+').next().unwrap_or(scheme);
    match scheme {
        "postgres" | "postgresql" => Ok(format!("postgres://{rest}")),
        "sqlite" => {
            let path = rest.strip_prefix('/').unwrap_or(rest);
            if path.is_empty() {
                bail!("an in-memory SQLite database would lose every task: give a file");
            }
            let separator = if path.contains('?') { '&' } else { '?' };
            Ok(format!("sqlite://{path}{separator}mode=rwc"))
        }
        other => bail!("`{other}` databases are not supported: give a PostgreSQL or SQLite URL"),
    }
}

/// Flask's `SERVER_NAME` (`host:port`) as a listen address, when it is one; a
/// public host name (Flask also uses it to build URLs) is not ours to bind.
fn listen_address(value: &str) -> anyhow::Result<Option<String>> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return Ok(None);
    };
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let address = format!("{host}:{port}");
    Ok(address
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|_| address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlalchemy_urls_become_ours() {
        assert_eq!(
            database_url("postgresql+psycopg2://u:p@db/qhana").expect("valid"),
            "postgres://u:p@db/qhana"
        );
        assert_eq!(
            database_url("sqlite:///runner.db").expect("valid"),
            "sqlite://runner.db?mode=rwc"
        );
        assert_eq!(
            database_url("sqlite:////var/lib/x.db?cache=shared").expect("valid"),
            "sqlite:///var/lib/x.db?cache=shared&mode=rwc"
        );
        assert!(database_url("sqlite://").is_err());
        assert!(database_url("mysql://db/x").is_err());
    }

    #[test]
    fn server_names_become_listen_addresses() {
        assert_eq!(
            listen_address("localhost:5005").expect("valid").as_deref(),
            Some("127.0.0.1:5005")
        );
        assert_eq!(listen_address("qhana.example.org:80").expect("valid"), None);
        assert_eq!(listen_address("qhana.example.org").expect("valid"), None);
    }
}
