//! How a pool's warm containers move to a new image of its LanguageImage
//! (`spec.rollout`), and how far each host has come (`status.nodes[].rollout`).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// How warm containers move to a new image of the pool's LanguageImage (a
/// new fingerprint behind its alias or recipe, or a new source). On each
/// host the new image is smoke-tested first, while the old one keeps
/// serving; new containers come from the new image only once it passed.
/// Executions that run finish undisturbed either way. A change of this
/// setting alone replaces no container.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxUnavailable) || self.strategy == 'Rolling'").message("maxUnavailable applies only to strategy: Rolling"))]
pub struct Rollout {
    /// `OnReplenish` (the default): warm containers of the old image keep
    /// serving until they are taken, and each taken one is replaced by one
    /// of the new image. `Rolling`: warm containers of the old image are
    /// replaced at once, `maxUnavailable` at a time.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// With `Rolling`: how far below its warm count a host may go while it
    /// replaces old warm containers (each replacement must be warm before
    /// the next old one goes). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_unavailable: Option<u32>,
}

impl Rollout {
    /// Old warm containers a `Rolling` host may have missing at a time.
    pub fn max_unavailable(&self) -> u32 {
        self.max_unavailable.unwrap_or(1).max(1)
    }
}

/// How old warm containers are replaced (see `Rollout`).
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum RolloutStrategy {
    /// Old warm containers serve until taken; replacements come from the
    /// new image.
    #[default]
    OnReplenish,
    /// Old warm containers are destroyed and replaced at once, at most
    /// `maxUnavailable` at a time.
    Rolling,
}

/// Where a host stands in moving a pool to a new image.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeRollout {
    /// `Proving` (the new image's smoke tests run; the old image serves),
    /// `Blocked` (the new image failed them or could not be had; the old
    /// image serves) or `Replacing` (new containers come from the new
    /// image; old warm containers are being replaced).
    pub phase: RolloutPhase,
    /// The image rolled away from: first 12 hex digits of its fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The image rolled to: first 12 hex digits of its fingerprint (empty
    /// while it could not be had).
    pub to: String,
    /// Warm containers of the image rolled to.
    pub updated: u32,
    /// Warm containers on the host, of either image.
    pub total: u32,
    /// Why the rollout is blocked, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The phase of a host's rollout (see `NodeRollout`).
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum RolloutPhase {
    /// The new image's smoke tests run on the host.
    #[default]
    Proving,
    /// The new image failed its smoke tests on the host, or could not be
    /// had; the old image keeps serving.
    Blocked,
    /// New containers come from the new image; old warm ones are replaced.
    Replacing,
}

/// The short form of a fingerprint shown in statuses (12 hex digits, as
/// `lxc image list` shows them).
pub fn short_fingerprint(fingerprint: &str) -> String {
    fingerprint.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_short_fingerprints() {
        let r: Rollout = serde_yaml::from_str("{}").unwrap();
        assert_eq!(r.strategy, RolloutStrategy::OnReplenish);
        assert_eq!(r.max_unavailable(), 1);
        let r: Rollout = serde_yaml::from_str("{strategy: Rolling, maxUnavailable: 3}").unwrap();
        assert_eq!(
            (r.strategy, r.max_unavailable()),
            (RolloutStrategy::Rolling, 3)
        );
        assert!(serde_yaml::from_str::<Rollout>("{strategy: rolling}").is_err());
        assert_eq!(short_fingerprint("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_fingerprint("abc"), "abc");
    }
}
