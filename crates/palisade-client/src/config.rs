//! Where the client connects and with which token, like kubeconfig:
//! `--server`/`--token` flags > `PALISADE_SERVER`/`PALISADE_TOKEN` > the
//! config file's context (`--context NAME`, else `current-context`).
//!
//! ```yaml
//! # ~/.config/palisade/config.yaml
//! current-context: prod
//! contexts:
//!   - name: prod
//!     server: https://cp-1.example:7400,https://cp-2.example:7400
//!     token-file: ~/.config/palisade/prod.token
//!     ca-file: /etc/palisade/ca.pem
//!   - name: lab
//!     server: http://127.0.0.1:7400
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ClientError;

/// The server when nothing names one (what `palisade server` listens on by default).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7400";

/// What the command line says (each field overrides the environment and
/// the config file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--server`: one URL, or several separated by commas (tried in turn).
    pub server: Option<String>,
    /// `--token`.
    pub token: Option<String>,
    /// `--context`.
    pub context: Option<String>,
    /// `--ca-file`: a PEM CA to trust for https.
    pub ca_file: Option<PathBuf>,
    /// `--config`: the config file (default `$PALISADE_CONFIG`, else
    /// `~/.config/palisade/config.yaml`).
    pub config_file: Option<PathBuf>,
}

/// The config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigFile {
    /// The context used when `--context` is not given.
    #[serde(default)]
    pub current_context: Option<String>,
    /// The contexts.
    #[serde(default)]
    pub contexts: Vec<Context>,
}

/// One server (or set of servers) and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Context {
    /// The context's name.
    pub name: String,
    /// The server URL(s), comma separated.
    pub server: String,
    /// The token itself.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (first line).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A PEM CA certificate to trust.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Server base URLs, tried in order.
    pub servers: Vec<String>,
    /// The bearer token.
    pub token: Option<String>,
    /// A PEM CA to trust besides the system's.
    pub ca_file: Option<PathBuf>,
}

impl ClientConfig {
    /// A configuration for one server URL and an optional token.
    pub fn for_server(url: &str, token: Option<&str>) -> ClientConfig {
        ClientConfig {
            servers: split_servers(url),
            token: token.map(str::to_owned),
            ca_file: None,
        }
    }

    /// Resolves flags, environment and config file.
    pub fn resolve(overrides: &Overrides) -> Result<ClientConfig, ClientError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let explicit_file = overrides
            .config_file
            .clone()
            .or_else(|| env("PALISADE_CONFIG").map(PathBuf::from));
        let file_path = explicit_file.clone().or_else(default_config_path);
        let file = match &file_path {
            Some(path) if path.exists() => read_config(path)?,
            Some(path) if explicit_file.is_some() => {
                return Err(ClientError::Config {
                    reason: format!("config file {} does not exist", path.display()),
                })
            }
            _ => ConfigFile::default(),
        };
        let context = select_context(&file, overrides.context.as_deref(), file_path.as_deref())?;

        let server = overrides
            .server
            .clone()
            .or_else(|| env("PALISADE_SERVER"))
            .or_else(|| context.map(|c| c.server.clone()))
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let token = match overrides.token.clone().or_else(|| env("PALISADE_TOKEN")) {
            Some(t) => Some(t),
            None => match context {
                Some(c) => context_token(c)?,
                None => None,
            },
        };
        let ca_file = overrides
            .ca_file
            .clone()
            .or_else(|| env("PALISADE_CA_FILE").map(PathBuf::from))
            .or_else(|| context.and_then(|c| c.ca_file.clone()))
            .map(|p| expand_home(&p));
        Ok(ClientConfig {
            servers: split_servers(&server),
            token,
            ca_file,
        })
    }
}

fn split_servers(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let url = if s.contains("://") {
                s.to_owned()
            } else {
                format!("http://{s}")
            };
            url.trim_end_matches('/').to_owned()
        })
        .collect()
}

fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("palisade").join("config.yaml"))
}

fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

fn read_config(path: &Path) -> Result<ConfigFile, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::Config {
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    serde_yaml::from_str(&text).map_err(|e| ClientError::Config {
        reason: format!(
            "{}: {e}; expected current-context and contexts: [{{name, server, token | token-file, ca-file}}]",
            path.display()
        ),
    })
}

fn select_context<'f>(
    file: &'f ConfigFile,
    asked: Option<&str>,
    path: Option<&Path>,
) -> Result<Option<&'f Context>, ClientError> {
    let Some(name) = asked.or(file.current_context.as_deref()) else {
        return Ok(None);
    };
    match file.contexts.iter().find(|c| c.name == name) {
        Some(c) => Ok(Some(c)),
        None => {
            let known: Vec<&str> = file.contexts.iter().map(|c| c.name.as_str()).collect();
            Err(ClientError::Config {
                reason: format!(
                    "no context '{name}' in {}; known contexts: {}",
                    path.map_or_else(|| "the config file".to_owned(), |p| p.display().to_string()),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            })
        }
    }
}

fn context_token(context: &Context) -> Result<Option<String>, ClientError> {
    if let Some(token) = &context.token {
        return Ok(Some(token.clone()));
    }
    let Some(path) = &context.token_file else {
        return Ok(None);
    };
    let path = expand_home(path);
    let text = std::fs::read_to_string(&path).map_err(|e| ClientError::Config {
        reason: format!(
            "context {}: cannot read token-file {}: {e}",
            context.name,
            path.display()
        ),
    })?;
    Ok(text.lines().next().map(|l| l.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_get_a_scheme_and_lose_trailing_slashes() {
        assert_eq!(
            split_servers("127.0.0.1:7400, https://cp:1/"),
            vec!["http://127.0.0.1:7400", "https://cp:1"]
        );
    }

    #[test]
    fn an_unknown_context_lists_the_known_ones() {
        let file: ConfigFile = serde_yaml::from_str(
            "current-context: a\ncontexts:\n  - {name: a, server: 'h:1'}\n  - {name: b, server: 'h:2'}\n",
        )
        .unwrap();
        assert_eq!(
            select_context(&file, None, None).unwrap().unwrap().server,
            "h:1"
        );
        let err = select_context(&file, Some("c"), None).unwrap_err();
        assert!(err.to_string().contains("known contexts: a, b"), "{err}");
    }
}
