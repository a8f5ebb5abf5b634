//! The reasons unsandbox writes in status conditions and Events: one closed
//! vocabulary, so the controller and the agents cannot drift apart on a
//! spelling, and code matches on variants rather than on strings.
//!
//! The strings are API: users' alerts and `kubectl wait` match on them, so a
//! variant's string never changes (the tests below pin each one).

use std::fmt;

use serde::{Serialize, Serializer};

/// Declares [`Reason`] with its wire string (the variant's name) and the
/// list of every variant, so neither can miss one.
macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident, )*) => {
        /// Why a condition has its status, or why an Event was recorded: one
        /// CamelCase word a program can match on.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $( $(#[$doc])* $variant, )*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];

            /// The reason as written in conditions and Events.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => stringify!($variant),)*
                }
            }
        }
    };
}

reasons! {
    // Problems of a pool's spec or image: the same on the controller and on
    // every agent (see `crd::problems`).

    /// The resource's spec fails validation (a pool's or an image's).
    InvalidSpec,
    /// The pool's LanguageImage does not exist.
    ImageNotFound,
    /// The pool's LanguageImage exists but fails validation.
    ImageInvalid,
    /// The host cannot give the pool its network tier (its egress proxy
    /// could not start); no containers are started there rather than run
    /// with other isolation.
    NetworkTierUnsupported,

    // A pool on one host (agent).

    /// The host could not bring the image into its LXD image store (it
    /// retries later).
    ImageUnavailable,
    /// The host is still bringing the image into its LXD image store.
    ImagePending,
    /// Launches keep failing on the host (Degraded).
    LaunchFailing,
    /// Some languages failed their smoke tests on the host and are not
    /// served there (Degraded).
    LanguagesUnavailable,
    /// Another pool on the host gives one of this pool's aliases to a
    /// different language, so requests for that alias are refused as
    /// ambiguous (Degraded).
    AliasConflict,
    /// A new image of the pool's LanguageImage failed its smoke tests on
    /// the host, or could not be had: the host keeps serving the old image
    /// (Degraded).
    RolloutBlocked,
    /// Nothing is wrong (Degraded is `False`).
    Healthy,
    /// The pool has been filled on the host and serves (Ready).
    Warm,
    /// The languages' smoke tests have not finished on the host yet.
    ProvingLanguages,
    /// The host is launching warm containers up to the pool's target.
    Filling,

    // A pool across its nodes (controller).

    /// No node that runs the agent matches the pool's node selector.
    NoNodes,
    /// Every covered node reports the pool ready.
    NodesReady,
    /// Some covered nodes are not ready yet, or have gone silent.
    NodesNotReady,
    /// The spec and its image are valid (Stalled is `False`).
    SpecValid,
    /// The pool's LanguageImage is being deleted; it stays while pools use it.
    ImageDeleting,
    /// Some covered nodes stopped sending heartbeats; their counts are left out.
    NodesStale,
    /// Some covered nodes report a problem with the pool.
    NodeProblems,
    /// The pool is being deleted and waits for its containers to be removed.
    Terminating,

    // A LanguageImage (controller).

    /// The image's spec is valid.
    Valid,
    /// The image was deleted but pools still refer to it, so it stays
    /// (condition and Event).
    InUse,

    // Standalone agent (pools from files).

    /// A pool document in the agent's files was rejected and not loaded.
    Rejected,

    // Events only.

    /// Event: every node removed a deleted pool's containers; the pool goes.
    ContainersRemoved,
    /// Event: a deleted pool was let go after the cleanup grace period while
    /// some nodes still reported containers.
    CleanupGraceExpired,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> Self {
        reason.as_str().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason with the exact string users see: renaming a variant, or
    /// adding one without pinning its string here, fails.
    const PINNED: &[(Reason, &str)] = &[
        (Reason::InvalidSpec, "InvalidSpec"),
        (Reason::ImageNotFound, "ImageNotFound"),
        (Reason::ImageInvalid, "ImageInvalid"),
        (Reason::NetworkTierUnsupported, "NetworkTierUnsupported"),
        (Reason::ImageUnavailable, "ImageUnavailable"),
        (Reason::ImagePending, "ImagePending"),
        (Reason::LaunchFailing, "LaunchFailing"),
        (Reason::LanguagesUnavailable, "LanguagesUnavailable"),
        (Reason::AliasConflict, "AliasConflict"),
        (Reason::RolloutBlocked, "RolloutBlocked"),
        (Reason::Healthy, "Healthy"),
        (Reason::Warm, "Warm"),
        (Reason::ProvingLanguages, "ProvingLanguages"),
        (Reason::Filling, "Filling"),
        (Reason::NoNodes, "NoNodes"),
        (Reason::NodesReady, "NodesReady"),
        (Reason::NodesNotReady, "NodesNotReady"),
        (Reason::SpecValid, "SpecValid"),
        (Reason::ImageDeleting, "ImageDeleting"),
        (Reason::NodesStale, "NodesStale"),
        (Reason::NodeProblems, "NodeProblems"),
        (Reason::Terminating, "Terminating"),
        (Reason::Valid, "Valid"),
        (Reason::InUse, "InUse"),
        (Reason::Rejected, "Rejected"),
        (Reason::ContainersRemoved, "ContainersRemoved"),
        (Reason::CleanupGraceExpired, "CleanupGraceExpired"),
    ];

    #[test]
    fn every_reason_keeps_its_wire_string() {
        for (reason, want) in PINNED {
            assert_eq!(reason.as_str(), *want);
            assert_eq!(reason.to_string(), *want);
            assert_eq!(String::from(*reason), *want);
            assert_eq!(serde_json::to_value(reason).unwrap(), *want);
        }
        let pinned: Vec<Reason> = PINNED.iter().map(|(r, _)| *r).collect();
        assert_eq!(pinned, Reason::ALL, "every reason pinned, once, in order");
    }
}
