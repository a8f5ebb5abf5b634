//! `spec.egress` of a `semitrusted` ExecutorPool: the hosts its code may
//! reach through the agent's proxy, and a per-execution budget.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A DNS name, or `*.` and a DNS name for its subdomains: lowercase labels,
/// the last one starting with a letter (so no IP address matches).
pub const HOST_PATTERN: &str =
    r"^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z]([-a-z0-9]{0,61}[a-z0-9])?$";

/// Where a `semitrusted` pool's code may connect. Its containers have no
/// network interface; one port on their loopback (`127.0.0.1:3128`, set as
/// `HTTP_PROXY` and `HTTPS_PROXY`) leads to the agent's proxy, which admits
/// HTTP requests and `CONNECT` tunnels to the hosts allowed here, and only
/// when every address the name resolves to is public. The allowlist is the
/// whole policy: an empty list reaches nothing.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Egress {
    /// Hosts the code may reach, with their ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub allow: Vec<EgressRule>,
    /// What one execution may use; without it only the execution's wall
    /// time bounds its traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<EgressBudget>,
}

/// One allowed host (or family of hosts) and its ports.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// A DNS name (`pypi.org`), or `*.` and a DNS name for every name below
    /// it (`*.debian.org` matches `deb.debian.org`, not `debian.org`).
    /// Lowercase; IP addresses are not accepted.
    #[schemars(length(min = 1, max = 253), regex(pattern = HOST_PATTERN))]
    pub host: String,
    /// Ports the host may be reached on (HTTP requests and `CONNECT`).
    #[serde(default = "default_ports")]
    #[schemars(length(min = 1, max = 32), inner(range(min = 1)))]
    pub ports: Vec<u16>,
}

fn default_ports() -> Vec<u16> {
    vec![80, 443]
}

/// The traffic one execution may cause; whatever exceeds it is cut and
/// reported.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EgressBudget {
    /// Bytes sent and received together, over all connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub bytes: Option<u64>,
    /// Connections opened (HTTP requests and `CONNECT` tunnels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub connections: Option<u32>,
}

impl EgressRule {
    /// Whether `host` (lowercase, no trailing dot) on `port` is allowed by
    /// this rule.
    pub fn admits(&self, host: &str, port: u16) -> bool {
        let name = match self.host.strip_prefix("*.") {
            Some(parent) => host
                .strip_suffix(parent)
                .and_then(|sub| sub.strip_suffix('.'))
                .is_some_and(|sub| !sub.is_empty()),
            None => host == self.host,
        };
        name && self.ports.contains(&port)
    }
}

impl Egress {
    /// Whether any rule admits `host` on `port`. The name is compared
    /// without case and without a trailing dot.
    pub fn admits(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allow.iter().any(|r| r.admits(&host, port))
    }
}

/// Whether `host` is a valid allowlist entry (see [`HOST_PATTERN`]).
pub fn valid_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    labels.iter().all(|l| label_ok(l))
        && labels
            .last()
            .is_some_and(|l| l.as_bytes()[0].is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(yaml: &str) -> Egress {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn exact_names_wildcards_and_ports() {
        let e = egress("allow: [{host: pypi.org, ports: [443]}, {host: '*.debian.org'}]");
        assert!(e.admits("pypi.org", 443));
        assert!(e.admits("PyPI.org.", 443), "case and a trailing dot");
        assert!(!e.admits("pypi.org", 80));
        assert!(!e.admits("evil-pypi.org", 443));
        assert!(
            !e.admits("files.pypi.org", 443),
            "an exact name has no subdomains"
        );
        assert!(e.admits("deb.debian.org", 80));
        assert!(e.admits("a.b.debian.org", 443));
        assert!(
            !e.admits("debian.org", 443),
            "a wildcard is for names below"
        );
        assert!(!e.admits("xdebian.org", 443));
        assert!(!e.admits("deb.debian.org", 8080));
        assert!(
            !Egress::default().admits("pypi.org", 443),
            "empty reaches nothing"
        );
    }

    #[test]
    fn host_entries_are_names_never_addresses() {
        for good in ["pypi.org", "*.debian.org", "a-b.c9.io", "localhost", "x1.y"] {
            assert!(valid_host(good), "{good}");
        }
        for bad in [
            "",
            "*",
            "*.",
            "1.2.3.4",
            "10.0.0.1",
            "Pypi.org",
            "a..b",
            "-a.org",
            "a-.org",
            "*.*.org",
            "a.*.org",
            "pypi.org.",
            "::1",
            "[::1]",
            "a_b.org",
            "pypi.org:443",
            "a.1org",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }
}
