//! LXD config keys that mark the containers an agent owns, and container names.

use rand::Rng;

/// Set to `true` on every container an unsandbox agent created.
pub const MANAGED: &str = "user.unsandbox.managed";
/// The node (host) whose agent owns the container.
pub const NODE: &str = "user.unsandbox.node";
/// `namespace/name` of the ExecutorPool the container belongs to.
pub const POOL: &str = "user.unsandbox.pool";
/// Hash of everything that shaped the container (image, limits, tier).
pub const SPEC: &str = "user.unsandbox.spec";
/// The container's network tier (`zerotrust` or `semitrusted`).
pub const NETWORK: &str = "user.unsandbox.network";
/// Set to `true` on a stopped template that pool containers are copied from.
pub const TEMPLATE: &str = "user.unsandbox.template";

pub use crate::execution::{NETWORK_MARKER, READY_MARKER, USED_MARKER};

/// A fresh container name for a pool: `us-<pool>-<random>`, within LXD's
/// 63-character hostname rule.
pub fn container_name(pool_name: &str) -> String {
    let mut slug: String = pool_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    while slug.ends_with('-') {
        slug.pop();
    }
    if slug.is_empty() {
        slug.push('p');
    }
    let suffix: u64 = rand::rng().random();
    format!("us-{slug}-{:012x}", suffix & 0xffff_ffff_ffff)
}

/// The template container of one container shape on one node. Copies of
/// it start without LXD re-mapping every file's owner, which halves the
/// cost of a launch.
pub fn template_name(hash: &str, node: &str) -> String {
    format!(
        "us-tpl-{}-{:06x}",
        &hash[..hash.len().min(16)],
        stable_hash(node.as_bytes()) & 0xff_ffff
    )
}

/// A hash that is the same on every host and in every release (64-bit
/// FNV-1a): container shapes, smoke-test keys and template names are
/// compared across restarts and between agents, so `std`'s randomly seeded
/// hasher will not do.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h: u64, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stable_hash_is_fnv1a() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn names_are_valid_hostnames_and_unique() {
        let a = container_name("Py_Pool.with.a.very-long-name-that-goes-on-and-on-and-on");
        let b = container_name("Py_Pool.with.a.very-long-name-that-goes-on-and-on-and-on");
        assert_ne!(a, b);
        assert!(a.len() <= 63, "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{a}"
        );
        assert!(container_name("---").starts_with("us-p-"));
    }
}
