//! The real container host: a local LXD daemon.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::agent::launcher::{self, Placement};
use crate::agent::smoke::{self, LanguageCheck};
use crate::agent::{image, keys, plan};
use crate::crd::{ExecutorPoolSpec, ImageSource, LanguageSpec, NetworkTier};
use crate::egress::EgressProxy;
use crate::lxd::{InstanceInfo, Lxd, LxdError};

use super::super::core::{ImageReady, LaunchOrder};
use super::ContainerHost;

/// A node's containers on LXD.
pub struct LxdHost {
    lxd: Lxd,
    node: String,
    storage_pool: String,
    images_dir: Option<PathBuf>,
    templates: bool,
    /// Serializes template creation.
    template_lock: tokio::sync::Mutex<()>,
    /// The egress proxy of `semitrusted` containers, when this host runs one.
    egress: Option<EgressProxy>,
    /// Launches started and launches ended: a listing during which neither
    /// changed saw every container that has an egress socket.
    launches_started: AtomicU64,
    launches_ended: AtomicU64,
}

impl LxdHost {
    /// The containers of `node` on `lxd`, with root disks on `storage_pool`.
    /// `images_dir` holds the image recipes (`None`: no builds); `templates`
    /// launches copies of a stopped, already id-mapped template container.
    /// `egress` serves the `semitrusted` containers (`None`: this host
    /// launches none).
    pub fn new(
        lxd: Lxd,
        node: &str,
        storage_pool: &str,
        images_dir: Option<PathBuf>,
        templates: bool,
        egress: Option<EgressProxy>,
    ) -> Self {
        Self {
            lxd,
            node: node.to_string(),
            storage_pool: storage_pool.to_string(),
            images_dir,
            templates,
            template_lock: tokio::sync::Mutex::new(()),
            egress,
            launches_started: AtomicU64::new(0),
            launches_ended: AtomicU64::new(0),
        }
    }

    /// Launches one container; a `semitrusted` one gets its egress socket
    /// first, and loses it again when the launch fails.
    async fn launch_one(&self, order: &LaunchOrder) -> Result<(), LxdError> {
        self.launches_started.fetch_add(1, Ordering::SeqCst);
        let result = self.launch_with_egress(order).await;
        self.launches_ended.fetch_add(1, Ordering::SeqCst);
        result
    }

    async fn launch_with_egress(&self, order: &LaunchOrder) -> Result<(), LxdError> {
        let name = order.container.as_str();
        let socket = match (order.spec.network, &self.egress) {
            (NetworkTier::Zerotrust, _) => None,
            (NetworkTier::Semitrusted, None) => {
                return Err(LxdError::Operation {
                    message: "this host runs no egress proxy for the semitrusted tier".into(),
                });
            }
            (NetworkTier::Semitrusted, Some(egress)) => {
                Some(egress.open(name, order.pool.as_str()).await.map_err(|e| {
                    LxdError::Operation {
                        message: e.to_string(),
                    }
                })?)
            }
        };
        let result = self.launch_container(order, socket.as_deref()).await;
        if let (Some(egress), Some(_)) = (&self.egress, &socket) {
            match &result {
                Err(_) => egress.close(name),
                // A listing that raced this launch may have closed the
                // socket it did not see yet: open is idempotent.
                Ok(()) => {
                    if let Err(e) = egress.open(name, order.pool.as_str()).await {
                        tracing::warn!(container = name, error = %e, "cannot reopen the egress socket");
                    }
                }
            }
        }
        result
    }

    async fn launch_container(
        &self,
        order: &LaunchOrder,
        egress_socket: Option<&std::path::Path>,
    ) -> Result<(), LxdError> {
        let at = Placement {
            node: &self.node,
            pool_key: order.pool.as_str(),
            storage_pool: &self.storage_pool,
            fingerprint: &order.fingerprint,
            hash: order.shape.as_str(),
            egress_socket,
        };
        let template = if self.templates {
            let _one_at_a_time = self.template_lock.lock().await;
            Some(launcher::ensure_template(&self.lxd, &order.spec, &at).await?)
        } else {
            None
        };
        launcher::launch(
            &self.lxd,
            order.container.as_str(),
            template.as_deref(),
            &order.spec,
            &at,
            order.ready_command.clone(),
        )
        .await
    }

    async fn ensure(&self, source: &ImageSource) -> Result<ImageReady, String> {
        let fingerprint = image::ensure(&self.lxd, source, self.images_dir.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        let versions = image::recorded_versions(&self.lxd, &fingerprint)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(fingerprint, error = %e, "cannot read the image's recorded versions");
                Default::default()
            });
        Ok(ImageReady {
            fingerprint,
            versions,
        })
    }

    /// The host's containers; the egress sockets follow them: every
    /// `semitrusted` container listed has its socket (re)opened (after a
    /// restart, the warm ones adopted), and a socket whose container is gone
    /// is closed when the listing saw the whole host (no launch started or
    /// ended meanwhile, so none was being created).
    async fn list_owned(&self) -> Result<Vec<InstanceInfo>, LxdError> {
        let ended = self.launches_ended.load(Ordering::SeqCst);
        let started = self.launches_started.load(Ordering::SeqCst);
        let owned = plan::owned_by(self.lxd.instances().await?, &self.node);
        let Some(egress) = &self.egress else {
            return Ok(owned);
        };
        for i in &owned {
            let semitrusted = i.config.get(keys::NETWORK).map(String::as_str)
                == Some(NetworkTier::Semitrusted.as_str());
            let pool = i.config.get(keys::POOL).filter(|p| !p.is_empty());
            if let (true, Some(pool)) = (semitrusted, pool)
                && let Err(e) = egress.open(&i.name, pool).await
            {
                tracing::warn!(container = %i.name, error = %e, "cannot open the egress socket");
            }
        }
        let quiet = started == ended
            && self.launches_started.load(Ordering::SeqCst) == started
            && self.launches_ended.load(Ordering::SeqCst) == ended;
        if quiet {
            let listed: std::collections::HashSet<&str> =
                owned.iter().map(|i| i.name.as_str()).collect();
            egress.retain(&|name| listed.contains(name));
        }
        Ok(owned)
    }

    /// Destroys a container, then closes its egress socket.
    async fn destroy_one(&self, name: &str) -> Result<(), LxdError> {
        self.lxd.destroy(name).await?;
        if let Some(egress) = &self.egress {
            egress.close(name);
        }
        Ok(())
    }

    /// Ready, never used, and for a `semitrusted` container its network
    /// readied too (an agent killed during a readiness exec leaves a
    /// container whose init is ready but whose loopback is down).
    async fn unused_check(&self, name: &str) -> Result<bool, LxdError> {
        let used = self.lxd.read_file(name, keys::USED_MARKER).await?;
        let ready = self.lxd.read_file(name, keys::READY_MARKER).await?;
        if used.is_some() || ready.is_none() {
            return Ok(false);
        }
        let semitrusted = self.lxd.instance(name).await?.is_some_and(|i| {
            i.config.get(keys::NETWORK).map(String::as_str)
                == Some(NetworkTier::Semitrusted.as_str())
        });
        if semitrusted {
            return Ok(self
                .lxd
                .read_file(name, keys::NETWORK_MARKER)
                .await?
                .is_some());
        }
        Ok(true)
    }
}

impl ContainerHost for LxdHost {
    fn ensure_image<'a>(
        &'a self,
        source: &'a ImageSource,
    ) -> BoxFuture<'a, Result<ImageReady, String>> {
        self.ensure(source).boxed()
    }

    fn launch<'a>(&'a self, order: &'a LaunchOrder) -> BoxFuture<'a, Result<(), LxdError>> {
        self.launch_one(order).boxed()
    }

    fn destroy<'a>(&'a self, container: &'a str) -> BoxFuture<'a, Result<(), LxdError>> {
        self.destroy_one(container).boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<InstanceInfo>, LxdError>> {
        self.list_owned().boxed()
    }

    fn unused<'a>(&'a self, container: &'a str) -> BoxFuture<'a, Result<bool, LxdError>> {
        self.unused_check(container).boxed()
    }

    fn recycle<'a>(&'a self, container: &'a str) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let out = crate::execution::session::recycle(&self.lxd, container)
                .await
                .map_err(|e| e.to_string())?;
            match (out.stopped, out.exit_code) {
                (crate::lxd::Stopped::Exited, Some(0)) => Ok(()),
                (stopped, code) => Err(format!(
                    "{} ({stopped:?}, exit code {code:?})",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            }
        }
        .boxed()
    }

    fn smoke<'a>(
        &'a self,
        container: &'a str,
        spec: &'a ExecutorPoolSpec,
        languages: &'a [LanguageSpec],
    ) -> BoxFuture<'a, Vec<LanguageCheck>> {
        async move {
            let limits = smoke::limits(spec);
            smoke::run_suite(&self.lxd, container, languages, &limits, spec.recycles()).await
        }
        .boxed()
    }
}
