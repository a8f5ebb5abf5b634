//! Instances: create, start, list, stop, delete, and read files and state.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use super::client::Lxd;
use super::error::LxdError;
use super::types::{InstanceCreate, InstanceInfo, InstanceState};

const CREATE_TIMEOUT: Duration = Duration::from_secs(300);
const STATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `destroy` keeps trying before it gives up (the next resync retries).
const DESTROY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long an ephemeral instance gets to delete itself after a stop.
const EPHEMERAL_GRACE: Duration = Duration::from_secs(3);

impl Lxd {
    /// Every instance in the project, with its config and status. The log
    /// folders of the project's instances that are gone are swept after it
    /// (`logs::sweep`: those quiet for a minute).
    pub async fn instances(&self) -> Result<Vec<InstanceInfo>, LxdError> {
        let listed: Vec<InstanceInfo> = {
            // Listing reads every running instance's state; it waits for
            // lifecycle operations (see `Lxd::lifecycle`).
            let _slot = self.lifecycle_slot().await;
            self.sync(Method::GET, "/1.0/instances?recursion=1", None)
                .await?
        };
        if let Some(dir) = &self.log_dir {
            let names: std::collections::HashSet<&str> =
                listed.iter().map(|i| i.name.as_str()).collect();
            let quiet = Duration::from_secs(60);
            let removed =
                super::logs::sweep(dir, self.project(), |n| names.contains(n), quiet).await;
            if removed > 0 {
                tracing::info!(removed, dir = %dir.display(), "removed log folders of deleted instances");
            }
        }
        Ok(listed)
    }

    /// One instance, if it exists.
    pub async fn instance(&self, name: &str) -> Result<Option<InstanceInfo>, LxdError> {
        let _slot = self.lifecycle_slot().await;
        match self
            .sync(Method::GET, &format!("/1.0/instances/{name}"), None)
            .await
        {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates an instance and waits until it exists (stopped).
    pub async fn create_instance(&self, spec: &InstanceCreate) -> Result<(), LxdError> {
        let body = serde_json::to_value(spec).map_err(|e| LxdError::Decode(e.to_string()))?;
        let _slot = self.lifecycle_slot().await;
        self.run_operation(Method::POST, "/1.0/instances", Some(body), CREATE_TIMEOUT)
            .await
            .map(|_| ())
    }

    /// Changes config keys of an instance; a running container's limits
    /// (for example `limits.memory`) apply at once.
    pub async fn set_config(&self, name: &str, config: &[(&str, String)]) -> Result<(), LxdError> {
        let config: serde_json::Map<String, serde_json::Value> = config
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let path = format!("/1.0/instances/{name}");
        let env = self
            .call(Method::PATCH, &path, Some(json!({ "config": config })))
            .await?;
        if env.kind == "async" {
            let op: super::types::Operation = serde_json::from_value(env.metadata)
                .map_err(|e| LxdError::Decode(format!("{path} operation: {e}")))?;
            self.wait(&op.id, STATE_TIMEOUT).await?;
        }
        Ok(())
    }

    /// Starts an instance and waits until it runs.
    pub async fn start_instance(&self, name: &str) -> Result<(), LxdError> {
        self.change_state(name, json!({"action": "start", "timeout": 30}))
            .await
    }

    /// Kills every process of an instance at once (`force`).
    pub async fn force_stop(&self, name: &str) -> Result<(), LxdError> {
        self.detach(name);
        self.change_state(
            name,
            json!({"action": "stop", "force": true, "timeout": 30}),
        )
        .await
    }

    async fn change_state(&self, name: &str, body: serde_json::Value) -> Result<(), LxdError> {
        let _slot = self.lifecycle_slot().await;
        self.run_operation(
            Method::PUT,
            &format!("/1.0/instances/{name}/state"),
            Some(body),
            STATE_TIMEOUT,
        )
        .await
        .map(|_| ())
    }

    /// Deletes a stopped instance. Deleting one that is gone is not an error.
    pub async fn delete_instance(&self, name: &str) -> Result<(), LxdError> {
        self.detach(name);
        let _slot = self.lifecycle_slot().await;
        let deleted = match self
            .run_operation(
                Method::DELETE,
                &format!("/1.0/instances/{name}"),
                None,
                STATE_TIMEOUT,
            )
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        };
        // LXD 5.0 leaves the instance's log folder behind (see `logs`).
        if deleted.is_ok()
            && let Some(dir) = &self.log_dir
        {
            super::logs::remove(dir, self.project(), name).await;
        }
        deleted
    }

    /// Stops an instance by force and deletes it, whatever state it is in;
    /// an instance that is already gone is not an error. An ephemeral
    /// instance deletes itself once stopped: this waits for that, and deletes
    /// it explicitly if LXD has not after a while.
    pub async fn destroy(&self, name: &str) -> Result<(), LxdError> {
        match self.force_stop(name).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(()),
            // Already stopped, or being stopped or deleted by LXD itself.
            Err(LxdError::Api { status: 400, .. }) | Err(LxdError::Operation { .. }) => {}
            Err(e) => return Err(e),
        }
        let start = std::time::Instant::now();
        loop {
            match self.instance(name).await? {
                None => return Ok(()),
                Some(i) if i.is_running() => {
                    if let Err(e) = self.force_stop(name).await
                        && e.is_not_found()
                    {
                        return Ok(());
                    }
                }
                Some(i) if !i.ephemeral || start.elapsed() > EPHEMERAL_GRACE => {
                    match self.delete_instance(name).await {
                        Ok(()) => return Ok(()),
                        Err(e) if start.elapsed() > DESTROY_TIMEOUT => return Err(e),
                        Err(_) => {}
                    }
                }
                Some(_) => {}
            }
            if start.elapsed() > DESTROY_TIMEOUT {
                return Err(LxdError::Timeout(DESTROY_TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Runtime state: status, memory use, process count.
    pub async fn instance_state(&self, name: &str) -> Result<InstanceState, LxdError> {
        let _slot = self.lifecycle_slot().await;
        self.sync(Method::GET, &format!("/1.0/instances/{name}/state"), None)
            .await
    }

    /// Reads a file from a running instance; `None` when it does not exist.
    pub async fn read_file(&self, name: &str, path: &str) -> Result<Option<Vec<u8>>, LxdError> {
        // LXD reads the file by attaching to the container, like a lifecycle
        // operation; it waits for the others (see `Lxd::lifecycle`).
        let _slot = self.lifecycle_slot().await;
        let (status, body) = self
            .raw(
                Method::GET,
                &format!("/1.0/instances/{name}/files?path={path}"),
                Default::default(),
                "application/json",
            )
            .await?;
        match status {
            StatusCode::OK => Ok(Some(body.to_vec())),
            StatusCode::NOT_FOUND => Ok(None),
            s => {
                let msg = serde_json::from_slice::<super::types::Envelope>(&body)
                    .map(|e| e.error)
                    .unwrap_or_default();
                // LXD answers 404 for a missing instance too; callers treat both alike.
                if msg.contains("not found") {
                    Ok(None)
                } else {
                    Err(LxdError::Api {
                        status: s.as_u16(),
                        message: msg,
                    })
                }
            }
        }
    }
}
