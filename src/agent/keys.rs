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
/// Set to `true` on a stopped template that pool containers are copied from.
pub const TEMPLATE: &str = "user.unsandbox.template";

/// Written inside a container (by root, before the code runs) when it is
/// handed to an execution: a container with it is never adopted as warm.
pub const USED_MARKER: &str = "/run/unsandbox/used";
/// Written by the image's init once the container is ready for executions.
pub const READY_MARKER: &str = "/run/unsandbox/ready";
/// Written by the image's init when it could not prepare the container.
pub const ERROR_MARKER: &str = "/run/unsandbox/error";

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
    let mut h: u32 = 0x811c_9dc5;
    for b in node.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    format!(
        "us-tpl-{}-{:06x}",
        &hash[..hash.len().min(16)],
        h & 0xff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
