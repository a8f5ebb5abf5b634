//! The node agent: keeps each pool's warm containers on this host, hands one
//! out per execution and destroys it afterwards. The same code runs
//! standalone (resources from files) and on Kubernetes (from the API server).
//!
//! - `core`: the state and every decision, as events in and effects out,
//!   with no I/O and no locks;
//! - `driver`: the `Agent`, which holds the lock, feeds the core and carries
//!   its effects out on a `host::ContainerHost` (LXD, or an in-memory fake
//!   in tests);
//! - pure helpers the core decides with: `desired` (what this host should
//!   run), `plan` (what a listing means), `core::choose` (which pool serves
//!   a request, or why none can), `core::status` (conditions), `smoke`
//!   (judging), `core::rollout` (moving a pool to a new image: proven
//!   while the old one serves, then replacing it per `spec.rollout`).

pub(crate) mod core;
pub(crate) mod desired;
pub(crate) mod driver;
pub(crate) mod host;
pub(crate) mod image;
pub(crate) mod keys;
pub(crate) mod launcher;
pub(crate) mod plan;
pub(crate) mod smoke;

use std::path::PathBuf;
use std::time::Duration;

use crate::lxd::Lxd;

pub use crate::languages::CatalogEntry;
pub use choose::{Blocker, Choice, ChoiceError};
pub use core::{choose, status};
pub use desired::Resources;
pub use driver::{AcquireError, Agent, Lease, Shortage};
pub use status::PoolReport;

/// Settings of an agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This host's name; containers are marked with it.
    pub node: String,
    /// LXD storage pool for container root disks.
    pub storage_pool: String,
    /// Folder holding `build.sh` and recipes; `None` disables builds.
    pub images_dir: Option<PathBuf>,
    /// Containers created at the same time, at most.
    pub launch_parallelism: usize,
    /// How often LXD is listed to catch containers changed out of band.
    pub resync_interval: Duration,
    /// Launch copies of a stopped, already id-mapped template container
    /// instead of creating each container from the image.
    pub templates: bool,
    /// Replacement launches, and stops of containers whose execution ended
    /// clean, wait while executions run, as long as their pool keeps its
    /// reserve warm (`Core::launch_may_start`, `Core::destroy_may_start`).
    pub executions_first: bool,
}

/// Destroys every container of `node` in the client's LXD project, tracked
/// by a running agent or not. Returns how many there were.
pub async fn cleanup(lxd: &Lxd, node: &str) -> Result<usize, crate::lxd::LxdError> {
    let owned = plan::owned_by(lxd.instances().await?, node);
    let results = futures::future::join_all(owned.iter().map(|i| lxd.destroy(&i.name))).await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(owned.len())
}
