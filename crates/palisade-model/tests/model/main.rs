//! Integration tests of palisade-model through its public API (one test
//! binary, one module per area).

mod common;
mod kubernetes;
mod loading;
mod resolve;
mod selectors;
mod validation;
