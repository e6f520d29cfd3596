//! palisade's intent model: resource types, parsing of YAML/JSON with
//! positions, validation with errors that name file:line:col, and import of
//! Kubernetes NetworkPolicy, Namespace and Pod objects.
//!
//! Entry points: [`load_paths`], [`load_str`], [`read_documents`], [`resource_from_json`],
//! [`Intent::from_resources`] and [`Intent::resolve`]. The user reference of
//! every kind and field is `docs/resources.md`.

#![warn(missing_docs)]

mod decode;
mod diagnostic;
mod document;
pub mod intent;
mod kubernetes;
mod load;
mod native;
mod policy_parts;
mod resolve;
pub mod resource;
pub mod selector;
mod syntax;
mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use intent::{Intent, PolicyName};
pub use load::{
    load_paths, load_str, read_documents, resource_from_json, FileDocument, LoadOptions,
};
pub use resolve::{RefError, Target};
pub use resource::*;
pub use selector::{
    Expr, LabelSelector, LabelSelectorOperator, LabelSelectorRequirement, Selector, SelectorError,
};
