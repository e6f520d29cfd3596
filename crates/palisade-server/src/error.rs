//! The server's errors: [`ServerError`] for starting it (configuration,
//! store, TLS, listener), and [`ApiError`], what a request gets back as
//! `{"error": {"code", "message", "details"}}` with its HTTP status.

use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use palisade_client::api::{ApiErrorObject, ErrorBody, ErrorDetail};
use palisade_store::StoreError;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error("cannot open the store {spec}: {source}")]
    Store {
        /// The `--store` value.
        spec: String,
        /// What the store said.
        #[source]
        source: StoreError,
    },
    /// The tokens file could not be read or has a bad entry.
    #[error("tokens file {path}: {reason}")]
    Tokens {
        /// The `--tokens` file.
        path: PathBuf,
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// The TLS certificate or key could not be used.
    #[error("TLS: {reason}; give a PEM certificate chain with --tls-cert and its PEM private key with --tls-key")]
    Tls {
        /// What is wrong.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}; pick a free address with --listen")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The stored state could not be read at start (etcd down, corrupt record).
    #[error("cannot read the stored state: {reason}")]
    State {
        /// What failed.
        reason: String,
    },
    /// The HTTP server stopped with an error.
    #[error("the HTTP server failed: {source}")]
    Serve {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body's `code`.
    pub code: &'static str,
    /// The body's `message`.
    pub message: String,
    /// The body's `details`.
    pub details: Vec<ErrorDetail>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// 400: the request is wrong; `details` say where.
    pub fn invalid(message: impl Into<String>, details: Vec<ErrorDetail>) -> ApiError {
        ApiError {
            details,
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
        }
    }

    /// 401: no or unknown token.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the token's role may not do this.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: a resource version did not match.
    pub fn conflict(message: impl Into<String>, details: Vec<ErrorDetail>) -> ApiError {
        ApiError {
            details,
            ..ApiError::new(StatusCode::CONFLICT, "conflict", message)
        }
    }

    /// 409: a delete is blocked by resources that refer to the target.
    pub fn referenced(message: impl Into<String>, details: Vec<ErrorDetail>) -> ApiError {
        ApiError {
            details,
            ..ApiError::new(StatusCode::CONFLICT, "referenced", message)
        }
    }

    /// 410: the history asked for was compacted.
    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GONE, "gone", message)
    }

    /// 503: the store is unreachable or a write's outcome is unknown.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ApiErrorObject {
                code: self.code.to_owned(),
                message: self.message.clone(),
                details: self.details.clone(),
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match &error {
            StoreError::Compacted { .. } => ApiError::gone(format!(
                "{error}: list again (GET the kinds) and watch from the list's revision"
            )),
            StoreError::InvalidTxn { reason } => ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "too_large",
                message: format!(
                    "the change is too large for one store transaction ({reason}); split it into \
                     several smaller applies"
                ),
                details: Vec::new(),
            },
            StoreError::Unreachable { .. }
            | StoreError::Etcd { .. }
            | StoreError::Closed { .. } => {
                ApiError::unavailable(format!("{error}; retry the request"))
            }
            _ => {
                tracing::error!(%error, "store error");
                ApiError::internal(error.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
