//! Where the agent's containers live: the `ContainerHost` trait the driver
//! carries effects out on. `LxdHost` is the real one; an in-memory fake lets
//! the agent's behaviour be tested without LXD.

#[cfg(test)]
pub mod fake;
mod lxd;

use futures::future::BoxFuture;

use crate::agent::smoke::LanguageCheck;
use crate::crd::{ExecutorPoolSpec, ImageSource, LanguageSpec};
use crate::lxd::{InstanceInfo, LxdError};

use super::core::{ImageReady, LaunchOrder};

pub use lxd::LxdHost;

/// The operations the agent needs from a container host. Each call is
/// independent; the driver runs several at once.
pub trait ContainerHost: Send + Sync + 'static {
    /// The image `source` names, looked up in the host's store (and built
    /// from its recipe when missing and allowed), with its recorded
    /// toolchain versions. The error is a message for people.
    fn ensure_image<'a>(
        &'a self,
        source: &'a ImageSource,
    ) -> BoxFuture<'a, Result<ImageReady, String>>;

    /// Creates, starts and readies one container. On failure whatever was
    /// created is removed before the error returns.
    fn launch<'a>(&'a self, order: &'a LaunchOrder) -> BoxFuture<'a, Result<(), LxdError>>;

    /// Stops and deletes a container; one that does not exist is no error.
    fn destroy<'a>(&'a self, container: &'a str) -> BoxFuture<'a, Result<(), LxdError>>;

    /// Every container this node's agents created, templates included.
    fn list(&self) -> BoxFuture<'_, Result<Vec<InstanceInfo>, LxdError>>;

    /// Whether a container is ready and was never handed to an execution,
    /// so it may be adopted as warm.
    fn unused<'a>(&'a self, container: &'a str) -> BoxFuture<'a, Result<bool, LxdError>>;

    /// Readies a recycling pool's container for its next execution: checks
    /// that the last one left nothing and builds a fresh sandbox. The error
    /// says what was left or failed; the container is then destroyed.
    fn recycle<'a>(&'a self, container: &'a str) -> BoxFuture<'a, Result<(), String>>;

    /// Runs every smoke test of `languages` in a launched container.
    fn smoke<'a>(
        &'a self,
        container: &'a str,
        spec: &'a ExecutorPoolSpec,
        languages: &'a [LanguageSpec],
    ) -> BoxFuture<'a, Vec<LanguageCheck>>;
}
