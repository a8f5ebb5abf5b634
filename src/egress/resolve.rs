//! Names to addresses: the system resolver, or an override file in
//! `/etc/hosts` format whose names resolve from the file alone. The proxy
//! checks every address it gets here and connects to those addresses only,
//! so a second answer (DNS rebinding) never reaches a socket.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::EgressError;

/// Resolves the names the proxy admitted.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    overrides: HashMap<String, Vec<IpAddr>>,
}

impl Resolver {
    /// A resolver that asks the system for every name.
    pub fn system() -> Self {
        Self::default()
    }

    /// Names from `path` (`ADDRESS NAME...` lines, `#` comments) resolve
    /// from it alone; others go to the system resolver.
    pub fn with_hosts_file(path: &Path) -> Result<Self, EgressError> {
        let text = std::fs::read_to_string(path).map_err(|source| EgressError::HostsFile {
            path: path.to_path_buf(),
            why: source.to_string(),
        })?;
        Self::parse(&text).map_err(|why| EgressError::HostsFile {
            path: path.to_path_buf(),
            why,
        })
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut overrides: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_whitespace();
            let Some(addr) = words.next() else { continue };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("line {}: {addr:?} is not an IP address", n + 1))?;
            let mut named = false;
            for name in words {
                named = true;
                let addrs = overrides.entry(normalize(name)).or_default();
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
            if !named {
                return Err(format!("line {}: an address without a name", n + 1));
            }
        }
        Ok(Self { overrides })
    }

    /// Every address of `host` (normalized, not an IP literal), with
    /// `port`. `Err` says why there is none.
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, String> {
        if let Some(addrs) = self.overrides.get(host) {
            return Ok(addrs.iter().map(|a| SocketAddr::new(*a, port)).collect());
        }
        let lookup = tokio::net::lookup_host((host, port));
        let found = match tokio::time::timeout(timeout, lookup).await {
            Err(_) => return Err(format!("no answer within {} ms", timeout.as_millis())),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(found)) => found,
        };
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for a in found {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        if addrs.is_empty() {
            return Err("no address".to_string());
        }
        Ok(addrs)
    }
}

/// A host as the policy and the resolver see it: lowercase, no trailing
/// dot.
pub fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn override_names_resolve_from_the_file_alone() {
        let r = Resolver::parse(
            "# test network\n203.0.113.2 allowed.test Other.Test.\n\n10.0.0.5 private.test # comment\n203.0.113.3 allowed.test\n2001:db8::1 allowed.test\n",
        )
        .unwrap();
        let t = Duration::from_secs(1);
        let addrs = r.resolve("allowed.test", 443, t).await.unwrap();
        let want: Vec<SocketAddr> = ["203.0.113.2:443", "203.0.113.3:443", "[2001:db8::1]:443"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(addrs, want);
        assert_eq!(
            r.resolve("other.test", 80, t).await.unwrap(),
            vec!["203.0.113.2:80".parse().unwrap()],
            "names are normalized"
        );
        assert_eq!(
            r.resolve("private.test", 80, t).await.unwrap(),
            vec!["10.0.0.5:80".parse().unwrap()]
        );
    }

    #[test]
    fn a_malformed_file_says_which_line() {
        let err = Resolver::parse("203.0.113.2 a.test\nnot-an-ip b.test\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        let err = Resolver::parse("203.0.113.2\n").unwrap_err();
        assert!(err.contains("without a name"), "{err}");
    }

    #[tokio::test]
    async fn other_names_go_to_the_system_resolver() {
        let r = Resolver::parse("203.0.113.2 allowed.test\n").unwrap();
        let addrs = r
            .resolve("localhost", 8080, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8080)
        );
    }
}
