//! palisade's intent model: resource types, parsing of YAML/JSON with
//! positions, validation with errors that name file:line:col, and import of
//! Kubernetes NetworkPolicy, Namespace and Pod objects.

pub mod intent;
pub mod resource;
pub mod selector;

pub use intent::Intent;
pub use resource::*;
pub use selector::{Expr, Selector};
