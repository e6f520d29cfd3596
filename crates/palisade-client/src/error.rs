//! The client's error: every failure turned into a message for the person
//! at the terminal (their mistake, someone else's change, a missing role,
//! an unreachable server), never an HTTP dump.

use std::fmt;

use crate::api::ErrorDetail;

/// What went wrong talking to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No server answered at the URL(s).
    #[error(
        "cannot reach the palisade server at {url}: {reason}; start one with `palisade server \
         --store PATH`, or point --server (or PALISADE_SERVER) at a running one"
    )]
    Connect {
        /// The URL(s) tried.
        url: String,
        /// The transport's error.
        reason: String,
    },
    /// The server answered with an error.
    #[error("{}", ApiMessage(self))]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error's code (`invalid`, `conflict`, `forbidden`, ...).
        code: String,
        /// The server's message.
        message: String,
        /// Individual problems.
        details: Vec<ErrorDetail>,
    },
    /// The client configuration is unusable (config file, context, CA file).
    #[error("client configuration: {reason}")]
    Config {
        /// What is wrong and what to do.
        reason: String,
    },
    /// The server's answer could not be understood.
    #[error(
        "unexpected answer from {url}: {reason}; is this a palisade server of the same version?"
    )]
    Protocol {
        /// The URL asked.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The details of an API error (validation errors, conflicts).
    pub fn details(&self) -> &[ErrorDetail] {
        match self {
            ClientError::Api { details, .. } => details,
            _ => &[],
        }
    }
}

/// The user-facing text of an API error.
struct ApiMessage<'a>(&'a ClientError);

impl fmt::Display for ApiMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ClientError::Api {
            status,
            code,
            message,
            details,
        } = self.0
        else {
            return Ok(());
        };
        match (*status, code.as_str()) {
            (400, _) => {
                for d in details {
                    writeln!(f, "{d}")?;
                }
                write!(
                    f,
                    "{message}\nfix the {} above and apply again",
                    if details.len() == 1 {
                        "error"
                    } else {
                        "errors"
                    }
                )
            }
            (409, "conflict") => {
                for d in details {
                    let resource = d.resource.as_deref().unwrap_or("the resource");
                    match d.current_version {
                        Some(v) => write!(
                            f,
                            "{resource} was changed by {} since you read it: its current version is {v}",
                            d.changed_by.as_deref().unwrap_or("someone else")
                        )?,
                        None => write!(f, "{resource} no longer exists")?,
                    }
                    writeln!(f)?;
                }
                write!(
                    f,
                    "nothing was written; re-read it with `palisade get ...` and apply again \
                     (or leave metadata.resourceVersion out to overwrite)"
                )
            }
            (409, _) => {
                for d in details {
                    writeln!(f, "{}", d.message)?;
                }
                f.write_str(message)
            }
            (401, _) => write!(
                f,
                "not authenticated: {message}; pass --token or set PALISADE_TOKEN (or token in \
                 the config file's context)"
            ),
            (403, _) => write!(f, "forbidden: {message}"),
            _ => {
                f.write_str(message)?;
                for d in details {
                    write!(f, "\n{d}")?;
                }
                Ok(())
            }
        }
    }
}
