//! The bodies of the read-only endpoints, typed so that their shape is
//! declared once: which fields are always there (null when unknown), which
//! are left out, and the fixed words some of them hold.

use serde::Serialize;
use utoipa::ToSchema;

use crate::agent::status::Serving;
use crate::api::openapi::KubeCondition;
use crate::crd::condition::Condition;
use crate::crd::{ExecutorPoolSpec, NetworkTier, NodePoolStatus, Reason};
use crate::standalone::Rejection;

/// One entry of `GET /languages`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Language {
    pub name: String,
    pub aliases: Vec<String>,
    /// null when the image does not report one.
    pub version: Option<String>,
    pub pools: Vec<LanguagePool>,
}

/// A pool serving a language, in `GET /languages`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LanguagePool {
    /// `namespace/name`.
    pub pool: String,
    pub network: NetworkTier,
    pub warm: u32,
}

/// `apiVersion` of the `/pools` entries: they are shaped like the CRD's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum ApiVersion {
    #[serde(rename = "unsandbox.com/v1alpha1")]
    V1alpha1,
}

/// `kind` of the `/pools` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum Kind {
    ExecutorPool,
}

/// One entry of `GET /pools`: a pool served here, or a rejected document
/// for a pool that is not served at all.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PoolEntry {
    Served(Box<ServedPool>),
    Rejected(RejectedPool),
}

/// A pool served on this host, like an ExecutorPool with its status.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServedPool {
    pub api_version: ApiVersion,
    pub kind: Kind,
    pub metadata: ServedMetadata,
    pub spec: ExecutorPoolSpec,
    pub status: ServedStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ServedMetadata {
    pub name: String,
    pub namespace: String,
    /// null outside Kubernetes.
    pub generation: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServedStatus {
    /// null outside Kubernetes.
    pub observed_generation: Option<i64>,
    pub warm: u32,
    pub busy: u32,
    /// `1/1` when this host serves the pool, else `0/1`.
    pub nodes_ready: String,
    #[schema(value_type = Vec<KubeCondition>)]
    pub conditions: Vec<Condition>,
    /// This host's entry, the only one.
    pub nodes: Vec<NodePoolStatus>,
    /// Documents about this pool or its image that are not applied; left
    /// out when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<RejectedDocument>,
}

/// A document of the configuration files that is not applied, and why.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RejectedDocument {
    pub file: String,
    /// Position in its file, from 0.
    pub document: usize,
    /// `ExecutorPool` or `LanguageImage`.
    pub kind: String,
    /// `namespace/name` of a pool, the name of an image (empty if unnamed).
    pub name: String,
    pub message: String,
    /// Whether the last good version is still served in its place.
    pub kept: bool,
}

impl From<Rejection> for RejectedDocument {
    fn from(r: Rejection) -> Self {
        Self {
            file: r.file.display().to_string(),
            document: r.document,
            kind: r.kind.to_string(),
            name: r.name,
            message: r.message,
            kept: r.kept,
        }
    }
}

/// A pool whose only document is rejected: `Ready=False`, reason `Rejected`.
/// Its schema is closed (`deny_unknown_fields` only tells utoipa so), so a
/// served pool, which has a `spec`, is not one of these as well.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RejectedPool {
    pub api_version: ApiVersion,
    pub kind: Kind,
    pub metadata: RejectedMetadata,
    pub status: RejectedStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RejectedMetadata {
    pub name: String,
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RejectedStatus {
    #[schema(value_type = Vec<KubeCondition>)]
    pub conditions: Vec<Condition>,
    pub rejected: Vec<RejectedDocument>,
}

/// The body of `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    #[serde(flatten)]
    pub detail: ReadinessDetail,
}

impl Readiness {
    pub fn serving(serving: Vec<Serving>) -> Self {
        let serving = serving
            .into_iter()
            .map(|s| ServingPool {
                pool: s.pool,
                languages: s.languages,
            })
            .collect();
        Self {
            ready: true,
            detail: ReadinessDetail::Serving { serving },
        }
    }

    pub fn waiting(message: Waiting, pools: Vec<UnreadyPool>) -> Self {
        Self {
            ready: false,
            detail: ReadinessDetail::Waiting { message, pools },
        }
    }
}

/// What is served, or why nothing is.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ReadinessDetail {
    Serving {
        serving: Vec<ServingPool>,
    },
    Waiting {
        message: Waiting,
        pools: Vec<UnreadyPool>,
    },
}

/// A ready pool and the languages it serves here.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ServingPool {
    /// `namespace/name`.
    pub pool: String,
    /// Languages that passed their smoke tests here, by name.
    pub languages: Vec<String>,
}

/// Why this host serves nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum Waiting {
    #[serde(
        rename = "this host has no pool to serve (none covers it, or its pools are not listed yet)"
    )]
    NoPool,
    #[serde(rename = "no pool on this host serves a language yet")]
    NoLanguage,
    #[serde(
        rename = "draining: this host is shutting down, finishing its running executions and taking no new ones"
    )]
    Draining,
}

/// A pool that is not ready here, with its `Ready` condition's reason.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct UnreadyPool {
    /// `namespace/name`.
    pub pool: String,
    pub reason: Reason,
    pub message: String,
}

/// The body of `GET /healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Health {
    pub status: HealthStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}
