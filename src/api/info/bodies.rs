//! The bodies of the read-only endpoints, typed so that their shape is
//! declared once: which fields are always there (null when unknown), which
//! are left out, and the fixed words some of them hold.

use serde::Serialize;

use crate::agent::status::Serving;
use crate::crd::condition::Condition;
use crate::crd::{ExecutorPoolSpec, NetworkTier, NodePoolStatus, Reason};
use crate::standalone::Rejection;

/// One entry of `GET /languages`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Language {
    pub name: String,
    pub aliases: Vec<String>,
    /// null when the image does not report one.
    pub version: Option<String>,
    pub pools: Vec<LanguagePool>,
}

/// A pool serving a language, in `GET /languages`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LanguagePool {
    /// `namespace/name`.
    pub pool: String,
    pub network: NetworkTier,
    pub warm: u32,
}

/// `apiVersion` of the `/pools` entries: they are shaped like the CRD's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ApiVersion {
    #[serde(rename = "unsandbox.com/v1alpha1")]
    V1alpha1,
}

/// `kind` of the `/pools` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    ExecutorPool,
}

/// One entry of `GET /pools`: a pool served here, or a rejected document
/// for a pool that is not served at all.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PoolEntry {
    Served(Box<ServedPool>),
    Rejected(RejectedPool),
}

/// A pool served on this host, like an ExecutorPool with its status.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServedPool {
    pub api_version: ApiVersion,
    pub kind: Kind,
    pub metadata: ServedMetadata,
    pub spec: ExecutorPoolSpec,
    pub status: ServedStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServedMetadata {
    pub name: String,
    pub namespace: String,
    /// null outside Kubernetes.
    pub generation: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServedStatus {
    /// null outside Kubernetes.
    pub observed_generation: Option<i64>,
    pub warm: u32,
    pub busy: u32,
    /// `1/1` when this host serves the pool, else `0/1`.
    pub nodes_ready: String,
    pub conditions: Vec<Condition>,
    /// This host's entry, the only one.
    pub nodes: Vec<NodePoolStatus>,
    /// Documents about this pool or its image that are not applied; left
    /// out when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Rejection>,
}

/// A pool whose only document is rejected: `Ready=False`, reason `Rejected`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectedPool {
    pub api_version: ApiVersion,
    pub kind: Kind,
    pub metadata: RejectedMetadata,
    pub status: RejectedStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedMetadata {
    pub name: String,
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedStatus {
    pub conditions: Vec<Condition>,
    pub rejected: Vec<Rejection>,
}

/// The body of `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    #[serde(flatten)]
    pub detail: ReadinessDetail,
}

impl Readiness {
    pub fn serving(serving: Vec<Serving>) -> Self {
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
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReadinessDetail {
    Serving {
        serving: Vec<Serving>,
    },
    Waiting {
        message: Waiting,
        pools: Vec<UnreadyPool>,
    },
}

/// Why this host serves nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnreadyPool {
    /// `namespace/name`.
    pub pool: String,
    pub reason: Reason,
    pub message: String,
}

/// The body of `GET /healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Health {
    pub status: HealthStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}
