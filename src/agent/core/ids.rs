//! Names the agent's state is keyed by: a pool, a container shape, a
//! container. Newtypes, so a container name cannot be passed where a pool key
//! is expected, and a pool key is split once, not wherever it is read.

use std::fmt;

/// An ExecutorPool's `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolKey {
    key: String,
    slash: usize,
}

impl PoolKey {
    /// The key of pool `name` in `namespace`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            key: format!("{namespace}/{name}"),
            slash: namespace.len(),
        }
    }

    /// Parses `namespace/name`; a key without a namespace is in `default`.
    pub fn parse(key: &str) -> Self {
        match key.split_once('/') {
            Some((ns, name)) => Self::new(ns, name),
            None => Self::new("default", key),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.key[..self.slash]
    }

    pub fn name(&self) -> &str {
        &self.key[self.slash + 1..]
    }

    /// `namespace/name`, as in metrics, LXD config keys and the API.
    pub fn as_str(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// The hash of everything that shapes a pool's containers (image
/// fingerprint, limits, tier; see `desired::container_hash`). A container of
/// another shape is replaced.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShapeHash(pub String);

impl ShapeHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ShapeHash {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl fmt::Display for ShapeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An LXD container's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerName(pub String);

impl ContainerName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ContainerName {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_keys_split_once() {
        let k = PoolKey::parse("team/py");
        assert_eq!(
            (k.namespace(), k.name(), k.as_str()),
            ("team", "py", "team/py")
        );
        let d = PoolKey::parse("py");
        assert_eq!((d.namespace(), d.name()), ("default", "py"));
        assert_eq!(PoolKey::new("a", "b/c").name(), "b/c");
    }
}
