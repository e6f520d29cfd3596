//! Integration tests of the control plane: servers on loopback over real
//! redb files and real etcd clusters started by the tests.

mod auth;
mod cluster;
mod common;
mod resources;
mod streams;
mod tls;
mod visibility;
