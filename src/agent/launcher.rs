//! Creating one warm container: its LXD definition (pure) and the create,
//! start and readiness wait (effects).

use std::time::{Duration, Instant};

use crate::crd::{ExecutorPoolSpec, NetworkTier};
use crate::lxd::{InstanceCreate, Lxd, LxdError};

use super::keys;

/// How long a started container may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a container goes and whose it is.
#[derive(Debug, Clone)]
pub struct Placement<'a> {
    pub node: &'a str,
    pub pool_key: &'a str,
    pub storage_pool: &'a str,
    pub fingerprint: &'a str,
    pub hash: &'a str,
}

/// The LXD definition of a pool container: ephemeral, unprivileged, no
/// profiles, only a root disk (so no network device), kernel-enforced limits,
/// and the keys that mark it as this node's.
pub fn instance_spec(name: &str, spec: &ExecutorPoolSpec, at: &Placement<'_>) -> InstanceCreate {
    let mut create = InstanceCreate::ephemeral_container(name, at.fingerprint, at.storage_pool);
    let l = &spec.limits;
    let config = [
        ("limits.cpu", l.cpus.to_string()),
        ("limits.memory", format!("{}MiB", l.memory_mib)),
        ("limits.memory.enforce", "hard".to_string()),
        ("limits.memory.swap", "false".to_string()),
        ("limits.processes", l.processes.to_string()),
        ("security.privileged", "false".to_string()),
        ("security.nesting", "false".to_string()),
        ("security.syscalls.deny_compat", "true".to_string()),
        ("boot.autostart", "false".to_string()),
        ("environment.UNSANDBOX_TMPFS_MIB", l.tmpfs_mib.to_string()),
        (keys::MANAGED, "true".to_string()),
        (keys::NODE, at.node.to_string()),
        (keys::POOL, at.pool_key.to_string()),
        (keys::SPEC, at.hash.to_string()),
    ];
    create.config.extend(config.into_iter().map(|(k, v)| (k.to_string(), v)));
    debug_assert_eq!(spec.network, NetworkTier::Zerotrust, "only zerotrust pools are launched");
    create
}

/// Creates and starts a container and waits until its init reports ready.
/// On failure whatever was created is destroyed before the error returns.
pub async fn launch(lxd: &Lxd, name: &str, spec: &ExecutorPoolSpec, at: &Placement<'_>) -> Result<(), LxdError> {
    let create = instance_spec(name, spec, at);
    let result = async {
        lxd.create_instance(&create).await?;
        lxd.start_instance(name).await?;
        wait_ready(lxd, name).await
    }
    .await;
    if let Err(e) = &result {
        tracing::warn!(container = name, error = %e, "launch failed; removing what was created");
        if let Err(e) = lxd.destroy(name).await {
            tracing::warn!(container = name, error = %e, "could not remove a failed launch; the next resync will");
        }
    }
    result
}

async fn wait_ready(lxd: &Lxd, name: &str) -> Result<(), LxdError> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(10);
    loop {
        if lxd.read_file(name, keys::READY_MARKER).await?.is_some() {
            return Ok(());
        }
        if let Some(err) = lxd.read_file(name, keys::ERROR_MARKER).await? {
            return Err(LxdError::Operation {
                message: format!("container init failed: {}", String::from_utf8_lossy(&err).trim()),
            });
        }
        if start.elapsed() > READY_TIMEOUT {
            return Err(LxdError::Timeout(READY_TIMEOUT));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_have_no_network_device_and_kernel_limits() {
        let spec: ExecutorPoolSpec =
            serde_yaml::from_str("image: small\nlimits: {cpus: 2, memoryMib: 128, processes: 32}\n").unwrap();
        let at = Placement { node: "n1", pool_key: "ns/py", storage_pool: "fast", fingerprint: "abc", hash: "h" };
        let c = instance_spec("us-py-1", &spec, &at);
        assert!(c.ephemeral);
        assert!(c.profiles.is_empty());
        assert_eq!(c.devices.len(), 1);
        assert_eq!(c.devices["root"]["type"], "disk");
        assert_eq!(c.devices["root"]["pool"], "fast");
        assert_eq!(c.config["limits.memory"], "128MiB");
        assert_eq!(c.config["limits.processes"], "32");
        assert_eq!(c.config["limits.cpu"], "2");
        assert_eq!(c.config["security.privileged"], "false");
        assert_eq!(c.config[keys::POOL], "ns/py");
        assert_eq!(c.config[keys::NODE], "n1");
    }
}
