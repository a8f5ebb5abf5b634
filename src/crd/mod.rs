//! Custom resource types (`unsandbox.com/v1alpha1`): types only, plus the pure
//! validation and status helpers that every role shares.

pub(crate) mod condition;
pub(crate) mod egress;
pub(crate) mod executor_pool;
pub(crate) mod labels;
pub(crate) mod language_image;
pub(crate) mod problems;
pub(crate) mod reason;
pub(crate) mod rollout;
pub(crate) mod validate;

pub use egress::{Egress, EgressBudget, EgressRule};
pub use executor_pool::{
    Autoscale, Bounded, ContainerLimits, ExecutionLimits, ExecutorPool, ExecutorPoolSpec,
    ExecutorPoolStatus, NetworkTier, NodeOverride, NodePoolStatus, Reuse, UnavailableLanguage,
};
pub use language_image::{
    ImageSource, LanguageImage, LanguageImageSpec, LanguageImageStatus, LanguageSpec, SmokeTest,
};
pub use problems::{Problem, pool_problem};
pub use reason::Reason;
pub use rollout::{NodeRollout, Rollout, RolloutPhase, RolloutStrategy, short_fingerprint};

/// API group of every unsandbox resource.
pub const GROUP: &str = "unsandbox.com";

/// Renders both CustomResourceDefinitions as one multi-document YAML stream,
/// exactly as checked in under `crds/`.
pub fn crds_yaml() -> String {
    use kube::CustomResourceExt;
    let docs = [
        serde_yaml::to_string(&LanguageImage::crd()).expect("CRD serializes"),
        serde_yaml::to_string(&ExecutorPool::crd()).expect("CRD serializes"),
    ];
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&doc);
    }
    out
}
