//! What the core asks the driver to do.

use crate::crd::{ExecutorPoolSpec, ImageSource, LanguageSpec};

use super::ids::{ContainerName, PoolKey, ShapeHash};

/// One thing to do on the host, decided by the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Look the image up in the host's store, building it when it is
    /// missing; answer with `Core::image_resolved`. Ordered again now and
    /// then for an image in the store, to notice a new fingerprint.
    EnsureImage(ImageSource),
    /// Create, start and ready one container; answer with `Core::launched`.
    Launch(LaunchOrder),
    /// Stop and delete a container; answer with `Core::destroyed`.
    Destroy {
        container: ContainerName,
        pool: PoolKey,
        /// The container served an execution that ended clean, so nothing
        /// of its program runs any more (the runner killed all it left):
        /// its stop may wait while executions run on the host
        /// (`Core::destroy_may_start`). Any other destroy is at once.
        deferrable: bool,
    },
    /// Check a recycling pool's container after an execution and give it a
    /// fresh sandbox; answer with `Core::recycled`.
    Recycle {
        container: ContainerName,
        pool: PoolKey,
    },
    /// List the host's containers; answer with `Core::listing`.
    List,
    /// Check whether a container of an earlier run is ready and unused;
    /// answer with `Core::inspected`.
    Inspect {
        container: ContainerName,
        pool: PoolKey,
    },
    /// Launch a pool's smoke container and run every language's tests in
    /// it; answer with `Core::smoke_finished`.
    Smoke(SmokeOrder),
    /// A warm container was added to the pool: wake whoever waits for one.
    WarmAdded(PoolKey),
    /// A condition of the pool on this host changed status or reason:
    /// publish its status now.
    Report(PoolKey),
    /// The pool is gone from this host: drop its gauges.
    PoolRemoved(PoolKey),
}

/// A container to launch.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchOrder {
    pub pool: PoolKey,
    pub container: ContainerName,
    pub spec: ExecutorPoolSpec,
    /// The image to create it from.
    pub fingerprint: String,
    /// The shape it is launched for; marked on the container.
    pub shape: ShapeHash,
    /// Run as root once it started; it is ready when this exits 0.
    pub ready_command: Vec<String>,
}

/// A pool's smoke suite to run.
#[derive(Debug, Clone, PartialEq)]
pub struct SmokeOrder {
    /// What the results are valid for (see `smoke::key`).
    pub key: String,
    /// The container the suite runs in.
    pub launch: LaunchOrder,
    pub languages: Vec<LanguageSpec>,
}

/// How a launch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchOutcome {
    /// Running and ready.
    Ready,
    /// Failed; whatever was created has been removed.
    Failed(String),
    /// Not attempted: the pool no longer wants it.
    Skipped,
}
