//! The real container host: a local LXD daemon.

use std::path::PathBuf;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::agent::launcher::{self, Placement};
use crate::agent::smoke::{self, LanguageCheck};
use crate::agent::{image, keys, plan};
use crate::crd::{ExecutorPoolSpec, ImageSource, LanguageSpec};
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
}

impl LxdHost {
    /// The containers of `node` on `lxd`, with root disks on `storage_pool`.
    /// `images_dir` holds the image recipes (`None`: no builds); `templates`
    /// launches copies of a stopped, already id-mapped template container.
    pub fn new(
        lxd: Lxd,
        node: &str,
        storage_pool: &str,
        images_dir: Option<PathBuf>,
        templates: bool,
    ) -> Self {
        Self {
            lxd,
            node: node.to_string(),
            storage_pool: storage_pool.to_string(),
            images_dir,
            templates,
            template_lock: tokio::sync::Mutex::new(()),
        }
    }

    async fn launch_one(&self, order: &LaunchOrder) -> Result<(), LxdError> {
        let at = Placement {
            node: &self.node,
            pool_key: order.pool.as_str(),
            storage_pool: &self.storage_pool,
            fingerprint: &order.fingerprint,
            hash: order.shape.as_str(),
            egress_socket: None,
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

    async fn unused_check(&self, name: &str) -> Result<bool, LxdError> {
        let used = self.lxd.read_file(name, keys::USED_MARKER).await?;
        let ready = self.lxd.read_file(name, keys::READY_MARKER).await?;
        Ok(used.is_none() && ready.is_some())
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
        self.lxd.destroy(container).boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<InstanceInfo>, LxdError>> {
        async move { Ok(plan::owned_by(self.lxd.instances().await?, &self.node)) }.boxed()
    }

    fn unused<'a>(&'a self, container: &'a str) -> BoxFuture<'a, Result<bool, LxdError>> {
        self.unused_check(container).boxed()
    }

    fn smoke<'a>(
        &'a self,
        container: &'a str,
        spec: &'a ExecutorPoolSpec,
        languages: &'a [LanguageSpec],
    ) -> BoxFuture<'a, Vec<LanguageCheck>> {
        async move {
            let limits = smoke::limits(spec);
            smoke::run_suite(&self.lxd, container, languages, &limits).await
        }
        .boxed()
    }
}
