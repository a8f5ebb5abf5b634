//! An in-memory container host for the agent's tests: containers are
//! records, launches and images succeed or fail as a test says, and a test
//! can stop, delete or mark containers behind the agent's back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::agent::core::{ImageReady, LaunchOrder};
use crate::agent::keys;
use crate::agent::launcher::{Placement, instance_spec};
use crate::agent::smoke::LanguageCheck;
use crate::crd::{ExecutorPoolSpec, ImageSource, LanguageSpec};
use crate::lxd::{InstanceInfo, LxdError};

use super::ContainerHost;

/// One container on the fake host.
#[derive(Debug, Clone)]
struct Record {
    info: InstanceInfo,
    used: bool,
    /// The image it was created from.
    fingerprint: String,
}

#[derive(Debug, Default)]
struct World {
    containers: BTreeMap<String, Record>,
    /// Launches that fail before any succeeds again.
    failing_launches: u32,
    /// Languages whose smoke tests fail.
    failing_languages: BTreeSet<String>,
    /// The image error, when images fail.
    image_error: Option<String>,
    /// The fingerprint every image resolves to, instead of one made from
    /// its alias (an image rebuilt behind its alias).
    fingerprint: Option<String>,
    /// Images in whose containers every smoke test fails.
    failing_images: BTreeSet<String>,
    launches: u32,
    destroys: u32,
    /// Launches under way now, and the most that ever were at once.
    launching: u32,
    most_launching: u32,
    /// Recycles that fail before any succeeds again.
    failing_recycles: u32,
    recycles: u32,
}

/// The fake host of one node.
pub struct FakeHost {
    node: String,
    world: Mutex<World>,
    /// How long a launch takes.
    launch_delay: Duration,
}

impl FakeHost {
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            world: Mutex::new(World::default()),
            launch_delay: Duration::from_millis(5),
        }
    }

    /// A fake host whose launches take `delay`.
    pub fn with_launch_delay(node: &str, delay: Duration) -> Self {
        Self {
            launch_delay: delay,
            ..Self::new(node)
        }
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `n` launches fail.
    pub fn fail_launches(&self, n: u32) {
        self.world().failing_launches = n;
    }

    /// The next `n` recycles find something left.
    pub fn fail_recycles(&self, n: u32) {
        self.world().failing_recycles = n;
    }

    /// Recycles done so far.
    pub fn recycles(&self) -> u32 {
        self.world().recycles
    }

    /// Smoke tests of `language` fail.
    pub fn fail_language(&self, language: &str) {
        self.world().failing_languages.insert(language.into());
    }

    /// Image lookups fail with `message` (`None`: they succeed).
    pub fn fail_images(&self, message: Option<&str>) {
        self.world().image_error = message.map(String::from);
    }

    /// Every image now resolves to `fingerprint`, as when it was rebuilt
    /// behind its alias.
    pub fn set_fingerprint(&self, fingerprint: &str) {
        self.world().fingerprint = Some(fingerprint.into());
    }

    /// Every smoke test fails in containers of image `fingerprint`.
    pub fn fail_image_smoke(&self, fingerprint: &str) {
        self.world().failing_images.insert(fingerprint.into());
    }

    /// The image of each running container, by name.
    pub fn images(&self) -> BTreeMap<String, String> {
        self.world()
            .containers
            .values()
            .filter(|r| r.info.is_running())
            .map(|r| (r.info.name.clone(), r.fingerprint.clone()))
            .collect()
    }

    /// Running pool containers (templates and stopped ones left out), sorted.
    pub fn running(&self) -> Vec<String> {
        self.world()
            .containers
            .values()
            .filter(|r| r.info.is_running())
            .map(|r| r.info.name.clone())
            .collect()
    }

    /// Every container, in any state.
    pub fn all(&self) -> Vec<String> {
        self.world().containers.keys().cloned().collect()
    }

    /// The most launches that were under way at once (since the last
    /// `count_launches_at_once_anew`).
    pub fn most_launches_at_once(&self) -> u32 {
        self.world().most_launching
    }

    /// Starts counting the launches under way at once anew.
    pub fn count_launches_at_once_anew(&self) {
        let mut w = self.world();
        w.most_launching = w.launching;
    }

    /// Launches and destroys carried out so far.
    pub fn calls(&self) -> (u32, u32) {
        let w = self.world();
        (w.launches, w.destroys)
    }

    /// Deletes a container behind the agent's back.
    pub fn delete_out_of_band(&self, name: &str) {
        self.world().containers.remove(name);
    }

    /// Stops a container behind the agent's back.
    pub fn stop_out_of_band(&self, name: &str) {
        if let Some(r) = self.world().containers.get_mut(name) {
            r.info.status = "Stopped".into();
        }
    }

    /// Marks a container as handed to an execution (its used marker).
    pub fn mark_used(&self, name: &str) {
        if let Some(r) = self.world().containers.get_mut(name) {
            r.used = true;
        }
    }

    /// Adds a container that looks like one of `node`'s, of pool `pool` and
    /// shape `hash`, as an earlier run or another program would leave it.
    pub fn plant(&self, name: &str, node: &str, pool: &str, hash: &str) {
        let info = InstanceInfo {
            name: name.into(),
            status: "Running".into(),
            ephemeral: false,
            config: BTreeMap::from([
                (keys::MANAGED.to_string(), "true".to_string()),
                (keys::NODE.to_string(), node.to_string()),
                (keys::POOL.to_string(), pool.to_string()),
                (keys::SPEC.to_string(), hash.to_string()),
                (keys::TEMPLATE.to_string(), "false".to_string()),
            ]),
        };
        let record = Record {
            info,
            used: false,
            fingerprint: String::new(),
        };
        self.world().containers.insert(name.into(), record);
    }
}

impl ContainerHost for FakeHost {
    fn ensure_image<'a>(
        &'a self,
        source: &'a ImageSource,
    ) -> BoxFuture<'a, Result<ImageReady, String>> {
        let w = self.world();
        let result = match &w.image_error {
            Some(e) => Err(e.clone()),
            None => Ok(ImageReady {
                fingerprint: w.fingerprint.clone().unwrap_or_else(|| {
                    format!(
                        "fp-{}",
                        source.effective_alias().unwrap_or_else(|| "x".into())
                    )
                }),
                versions: BTreeMap::from([("python".to_string(), "3.11.2".to_string())]),
            }),
        };
        drop(w);
        async move { result }.boxed()
    }

    fn launch<'a>(&'a self, order: &'a LaunchOrder) -> BoxFuture<'a, Result<(), LxdError>> {
        async move {
            {
                let mut w = self.world();
                w.launching += 1;
                w.most_launching = w.most_launching.max(w.launching);
            }
            tokio::time::sleep(self.launch_delay).await;
            let mut w = self.world();
            w.launching -= 1;
            w.launches += 1;
            if w.failing_launches > 0 {
                w.failing_launches -= 1;
                return Err(LxdError::Operation {
                    message: "no space left on device".into(),
                });
            }
            let at = Placement {
                node: &self.node,
                pool_key: order.pool.as_str(),
                storage_pool: "fake",
                fingerprint: &order.fingerprint,
                hash: order.shape.as_str(),
                egress_socket: None,
            };
            let spec = instance_spec(order.container.as_str(), &order.spec, &at);
            let info = InstanceInfo {
                name: order.container.0.clone(),
                status: "Running".into(),
                ephemeral: false,
                config: spec.config,
            };
            let record = Record {
                info,
                used: false,
                fingerprint: order.fingerprint.clone(),
            };
            w.containers.insert(order.container.0.clone(), record);
            Ok(())
        }
        .boxed()
    }

    fn destroy<'a>(&'a self, container: &'a str) -> BoxFuture<'a, Result<(), LxdError>> {
        let mut w = self.world();
        w.destroys += 1;
        w.containers.remove(container);
        async { Ok(()) }.boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<InstanceInfo>, LxdError>> {
        let all: Vec<InstanceInfo> = self
            .world()
            .containers
            .values()
            .map(|r| r.info.clone())
            .collect();
        let owned = crate::agent::plan::owned_by(all, &self.node);
        async move { Ok(owned) }.boxed()
    }

    fn unused<'a>(&'a self, container: &'a str) -> BoxFuture<'a, Result<bool, LxdError>> {
        let result = match self.world().containers.get(container) {
            Some(r) => Ok(!r.used && r.info.is_running()),
            None => Err(LxdError::Api {
                status: 404,
                message: format!("instance {container} not found"),
            }),
        };
        async move { result }.boxed()
    }

    fn recycle<'a>(&'a self, container: &'a str) -> BoxFuture<'a, Result<(), String>> {
        let mut w = self.world();
        w.recycles += 1;
        let result = if !w.containers.contains_key(container) {
            Err(format!("instance {container} not found"))
        } else if w.failing_recycles > 0 {
            w.failing_recycles -= 1;
            Err("recycle: processes left: 42".to_string())
        } else {
            Ok(())
        };
        async move { result }.boxed()
    }

    fn smoke<'a>(
        &'a self,
        container: &'a str,
        _spec: &'a ExecutorPoolSpec,
        languages: &'a [LanguageSpec],
    ) -> BoxFuture<'a, Vec<LanguageCheck>> {
        let w = self.world();
        let failing = w.failing_languages.clone();
        let bad_image = w
            .containers
            .get(container)
            .is_some_and(|r| w.failing_images.contains(&r.fingerprint));
        drop(w);
        let checks = languages
            .iter()
            .map(|l| {
                let passed = !failing.contains(&l.name) && !bad_image;
                LanguageCheck {
                    language: l.name.clone(),
                    passed,
                    error: (!passed).then(|| "hello: printed \"\"".to_string()),
                    compile_ms: None,
                    run_ms: 1,
                }
            })
            .collect();
        async move { checks }.boxed()
    }
}
