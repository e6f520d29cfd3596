//! Choosing a backend from one string, the server's `--store` value: a file
//! path (or `embedded:PATH`) for the embedded store, `etcd://host:port,host:port`
//! or `etcd:http://host:port,http://host:port` for etcd.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::{EmbeddedStore, EtcdStore, Result, Store, StoreError};

/// Which backend to open, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    /// The embedded store in this redb file.
    Embedded(PathBuf),
    /// An etcd cluster at these endpoint URLs (`http://host:port`).
    Etcd(Vec<String>),
}

impl StoreSpec {
    /// Opens the backend.
    pub async fn open(&self) -> Result<Arc<dyn Store>> {
        match self {
            StoreSpec::Embedded(path) => {
                let file = path.clone();
                // Opening may repair the file after a crash: keep it off the
                // async threads.
                let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(file))
                    .await
                    .map_err(|source| StoreError::Worker {
                        path: path.clone(),
                        action: "open",
                        source,
                    })??;
                Ok(Arc::new(store))
            }
            StoreSpec::Etcd(endpoints) => Ok(Arc::new(EtcdStore::connect(endpoints).await?)),
        }
    }
}

impl FromStr for StoreSpec {
    type Err = StoreError;

    fn from_str(spec: &str) -> Result<Self> {
        let invalid = |reason: &str| StoreError::InvalidSpec {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(path) = spec.strip_prefix("embedded:") {
            return if path.is_empty() {
                Err(invalid(
                    "give a file path after embedded:, e.g. embedded:/var/lib/palisade/store.redb",
                ))
            } else {
                Ok(StoreSpec::Embedded(PathBuf::from(path)))
            };
        }
        // `etcd://h:p,h:p` or `etcd:http://h:p,http://h:p` (URLs as etcd prints them).
        let members = spec
            .strip_prefix("etcd://")
            .or_else(|| spec.strip_prefix("etcd:"));
        if let Some(members) = members {
            let endpoints: Vec<String> = members
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(|m| m.strip_prefix("http://").unwrap_or(m))
                .map(|m| format!("http://{m}"))
                .collect();
            if endpoints.is_empty() {
                return Err(invalid(
                    "name at least one member, e.g. etcd://10.0.0.1:2379",
                ));
            }
            if let Some(bad) = endpoints.iter().find(|e| e[7..].contains('/')) {
                return Err(invalid(&format!(
                    "{bad} has a path; give host:port pairs separated by commas"
                )));
            }
            Ok(StoreSpec::Etcd(endpoints))
        } else if spec.contains("://") {
            Err(invalid(
                "give a file path for the embedded store or etcd://host:port,... for etcd",
            ))
        } else if spec.is_empty() {
            Err(invalid(
                "give a file path, e.g. /var/lib/palisade/store.redb",
            ))
        } else {
            Ok(StoreSpec::Embedded(PathBuf::from(spec)))
        }
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Embedded(path) => write!(f, "{}", path.display()),
            StoreSpec::Etcd(endpoints) => {
                let members: Vec<&str> = endpoints
                    .iter()
                    .map(|e| e.strip_prefix("http://").unwrap_or(e))
                    .collect();
                write!(f, "etcd://{}", members.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_selects_the_embedded_store() {
        let spec: StoreSpec = "/var/lib/palisade/store.redb".parse().unwrap();
        assert_eq!(
            spec,
            StoreSpec::Embedded(PathBuf::from("/var/lib/palisade/store.redb"))
        );
    }

    #[test]
    fn etcd_members_become_endpoint_urls_and_print_back() {
        let spec: StoreSpec = "etcd://10.0.0.1:2379, 10.0.0.2:2379".parse().unwrap();
        assert_eq!(
            spec,
            StoreSpec::Etcd(vec![
                "http://10.0.0.1:2379".to_owned(),
                "http://10.0.0.2:2379".to_owned()
            ])
        );
        assert_eq!(spec.to_string(), "etcd://10.0.0.1:2379,10.0.0.2:2379");
    }

    #[test]
    fn prefixed_forms_name_the_same_backends() {
        let spec: StoreSpec = "etcd:http://10.0.0.1:2379,http://10.0.0.2:2379"
            .parse()
            .unwrap();
        assert_eq!(spec, "etcd://10.0.0.1:2379,10.0.0.2:2379".parse().unwrap());
        let spec: StoreSpec = "embedded:/tmp/s.redb".parse().unwrap();
        assert_eq!(spec, StoreSpec::Embedded(PathBuf::from("/tmp/s.redb")));
    }

    #[test]
    fn malformed_specs_are_refused() {
        for bad in [
            "",
            "etcd://",
            "etcd:",
            "embedded:",
            "etcd://h:1/x",
            "etcd:https://h:1",
            "http://h:2379",
        ] {
            assert!(
                matches!(
                    bad.parse::<StoreSpec>(),
                    Err(StoreError::InvalidSpec { .. })
                ),
                "{bad:?} was accepted"
            );
        }
    }
}
