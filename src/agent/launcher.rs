//! Creating one warm container: its LXD definition (pure) and the create,
//! start and readiness wait (effects).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::crd::{ExecutorPoolSpec, NetworkTier};
use crate::lxd::{ExecSpec, InstanceCreate, Lxd, LxdError, Stopped};

use super::keys;

/// LXD finishes a stop (its stop hook unmounts the root disk) after the stop
/// operation reports success; copying the template during that window stalls
/// LXD for a minute, so a freshly stopped template rests this long first.
const TEMPLATE_SETTLE: Duration = Duration::from_secs(2);
/// How long a started container may take to get ready and warm up.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Where a container goes and whose it is.
#[derive(Debug, Clone)]
pub struct Placement<'a> {
    pub node: &'a str,
    pub pool_key: &'a str,
    pub storage_pool: &'a str,
    pub fingerprint: &'a str,
    pub hash: &'a str,
    /// The agent's egress socket for this container (`semitrusted` pools):
    /// a `proxy` device relays the container's `EGRESS_PROXY` port to it.
    pub egress_socket: Option<&'a Path>,
}

/// The LXD definition of a pool container: unprivileged, no
/// profiles, only a root disk (so no network device), kernel-enforced limits,
/// and the keys that mark it as this node's. A `semitrusted` container has
/// no network device either: its one way out is an LXD `proxy` device that
/// listens on its loopback at `EGRESS_PROXY` and relays each connection to
/// the agent's egress socket for it (`Placement::egress_socket`), so the
/// kernel leaves it nothing else to reach.
///
/// Hardening beyond LXD's defaults: no `/dev/lxd` socket (`security.devlxd`),
/// no nested user namespaces (the container's own `user.max_user_namespaces`
/// sysctl is 0, set by LXC at start, before any code runs, and the runner has
/// no capability to change it: `unshare -r` fails), and a CFS quota of
/// 100 ms per 100 ms per CPU besides the pinned cores (`limits.cpu.allowance`),
/// so spinning code gets its share and no more.
pub fn instance_spec(name: &str, spec: &ExecutorPoolSpec, at: &Placement<'_>) -> InstanceCreate {
    let mut create = InstanceCreate::container(name, at.fingerprint, at.storage_pool);
    let l = &spec.limits;
    let config = [
        ("limits.cpu", l.cpus.to_string()),
        ("limits.cpu.allowance", format!("{}ms/100ms", 100 * l.cpus)),
        ("limits.memory", format!("{}MiB", l.memory_mib)),
        ("limits.memory.enforce", "hard".to_string()),
        ("limits.memory.swap", "false".to_string()),
        ("limits.processes", l.processes.to_string()),
        ("security.privileged", "false".to_string()),
        ("security.nesting", "false".to_string()),
        ("security.syscalls.deny_compat", "true".to_string()),
        ("security.devlxd", "false".to_string()),
        ("linux.sysctl.user.max_user_namespaces", "0".to_string()),
        ("boot.autostart", "false".to_string()),
        ("environment.UNSANDBOX_TMPFS_MIB", l.tmpfs_mib.to_string()),
        (keys::MANAGED, "true".to_string()),
        (keys::NODE, at.node.to_string()),
        (keys::POOL, at.pool_key.to_string()),
        (keys::SPEC, at.hash.to_string()),
        (keys::NETWORK, spec.network.to_string()),
        // Explicit, so a copy never inherits its template's `true`.
        (keys::TEMPLATE, "false".to_string()),
    ];
    create
        .config
        .extend(config.into_iter().map(|(k, v)| (k.to_string(), v)));
    if let (NetworkTier::Semitrusted, Some(socket)) = (spec.network, at.egress_socket) {
        create
            .devices
            .insert(EGRESS_DEVICE.to_string(), egress_device(socket));
    }
    create
}

/// Name of a `semitrusted` container's egress `proxy` device.
pub const EGRESS_DEVICE: &str = "egress";

/// The `proxy` device that relays the container's `EGRESS_PROXY` port (on
/// its loopback) to `socket` on the host: LXD's forkproxy listens inside
/// the container and connects on the host side.
fn egress_device(socket: &Path) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("type".to_string(), "proxy".to_string()),
        ("bind".to_string(), "container".to_string()),
        (
            "listen".to_string(),
            format!("tcp:{}", crate::execution::EGRESS_PROXY),
        ),
        ("connect".to_string(), format!("unix:{}", socket.display())),
    ])
}

/// Makes sure the stopped template for this shape exists on LXD: created
/// from the image, started once (which id-maps its files) and stopped.
/// Callers serialize calls for the same shape.
pub async fn ensure_template(
    lxd: &Lxd,
    spec: &ExecutorPoolSpec,
    at: &Placement<'_>,
) -> Result<String, LxdError> {
    let name = keys::template_name(at.hash, at.node);
    match lxd.instance(&name).await? {
        Some(i) if i.status == "Stopped" => return Ok(name),
        Some(_) => {
            lxd.force_stop(&name).await?;
            tokio::time::sleep(TEMPLATE_SETTLE).await;
            return Ok(name);
        }
        None => {}
    }
    tracing::info!(template = %name, "creating the template container for this shape");
    let at = Placement {
        egress_socket: None,
        ..at.clone()
    };
    let mut create = instance_spec(&name, spec, &at);
    create.config.insert(keys::POOL.to_string(), String::new());
    create
        .config
        .insert(keys::TEMPLATE.to_string(), "true".to_string());
    let result = async {
        lxd.create_instance(&create).await?;
        lxd.start_instance(&name).await?;
        // A recycling shape's template installs the sandbox helper, which
        // every copy then has.
        ready(
            lxd,
            &name,
            crate::execution::ready_command(&[], NetworkTier::Zerotrust, spec.recycles()),
            crate::execution::ready_stdin(spec.recycles()),
            false,
        )
        .await?;
        lxd.force_stop(&name).await?;
        tokio::time::sleep(TEMPLATE_SETTLE).await;
        Ok(())
    }
    .await;
    if let Err(e) = &result {
        tracing::warn!(template = %name, error = %e, "template creation failed; removing it");
        let _ = lxd.destroy(&name).await;
    }
    result.map(|()| name)
}

/// Creates a container (a copy of `template` when given, else from the
/// image), starts it and runs the readiness exec (see
/// `execution::ready_command`).
/// On failure whatever was created is destroyed before the error returns.
pub async fn launch(
    lxd: &Lxd,
    name: &str,
    template: Option<&str>,
    spec: &ExecutorPoolSpec,
    at: &Placement<'_>,
    ready_command: Vec<String>,
) -> Result<(), LxdError> {
    let mut create = instance_spec(name, spec, at);
    if let Some(t) = template {
        create = create.copied_from(t);
    }
    let result = async {
        lxd.create_instance(&create).await?;
        lxd.start_instance(name).await?;
        ready(
            lxd,
            name,
            ready_command,
            crate::execution::ready_stdin(spec.recycles()),
            spec.recycles(),
        )
        .await
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

/// Runs the readiness exec (see `execution::ready_command`) with `stdin`
/// (`execution::ready_stdin`); a recycled container's (`session`) is the
/// first request of the session its executions will run in, so that
/// neither costs an exec of its own.
async fn ready(
    lxd: &Lxd,
    name: &str,
    command: Vec<String>,
    stdin: Vec<u8>,
    session: bool,
) -> Result<(), LxdError> {
    let exec = ExecSpec {
        command,
        env: BTreeMap::from([(
            "PATH".to_string(),
            "/usr/local/bin:/usr/bin:/bin".to_string(),
        )]),
        user: 0,
        group: 0,
        cwd: "/".to_string(),
        stdin,
        output_cap: 64 * 1024,
        deadline: READY_TIMEOUT,
    };
    let out = crate::execution::session::exec_or_session(lxd, name, exec, None, session).await?;
    match (out.stopped, out.exit_code) {
        (Stopped::Exited, Some(0)) => Ok(()),
        (Stopped::Exited, code) => Err(LxdError::Operation {
            message: format!(
                "container did not get ready (exit {code:?}): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
        _ => Err(LxdError::Timeout(READY_TIMEOUT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_have_no_network_device_and_kernel_limits() {
        let spec: ExecutorPoolSpec = serde_yaml::from_str(
            "image: small\nlimits: {cpus: 2, memoryMib: 128, processes: 32}\n",
        )
        .unwrap();
        let at = Placement {
            node: "n1",
            pool_key: "ns/py",
            storage_pool: "fast",
            fingerprint: "abc",
            hash: "h",
            egress_socket: Some(Path::new("/run/unsandbox/egress/us-py-1.sock")),
        };
        let c = instance_spec("us-py-1", &spec, &at);
        assert!(!c.ephemeral, "deleted explicitly after the stop");
        assert!(c.profiles.is_empty());
        assert_eq!(c.devices.len(), 1);
        assert_eq!(c.devices["root"]["type"], "disk");
        assert_eq!(c.devices["root"]["pool"], "fast");
        assert_eq!(c.config["limits.memory"], "128MiB");
        assert_eq!(c.config["limits.processes"], "32");
        assert_eq!(c.config["limits.cpu"], "2");
        assert_eq!(c.config["limits.cpu.allowance"], "200ms/100ms");
        assert_eq!(c.config["security.devlxd"], "false");
        assert_eq!(c.config["linux.sysctl.user.max_user_namespaces"], "0");
        assert_eq!(c.config["security.privileged"], "false");
        assert_eq!(c.config[keys::POOL], "ns/py");
        assert_eq!(c.config[keys::NODE], "n1");
        assert_eq!(c.config[keys::NETWORK], "zerotrust");
        let copy = c.copied_from("us-tpl-h");
        let json = serde_json::to_value(&copy).unwrap();
        assert_eq!(
            json["source"],
            serde_json::json!({"type": "copy", "source": "us-tpl-h", "instance_only": true})
        );
        assert!(json["devices"]["eth0"].is_null());
    }

    #[test]
    fn a_semitrusted_container_has_no_nic_only_a_relay_to_its_egress_socket() {
        let spec: ExecutorPoolSpec = serde_yaml::from_str(
            "image: small\nnetwork: semitrusted\negress: {allow: [{host: pypi.org}]}\n",
        )
        .unwrap();
        let socket = Path::new("/run/unsandbox/egress/us-py-1.sock");
        let at = Placement {
            node: "n1",
            pool_key: "ns/py",
            storage_pool: "fast",
            fingerprint: "abc",
            hash: "h",
            egress_socket: Some(socket),
        };
        let c = instance_spec("us-py-1", &spec, &at);
        assert_eq!(c.config[keys::NETWORK], "semitrusted");
        assert_eq!(
            c.devices.len(),
            2,
            "root disk and the relay: {:?}",
            c.devices
        );
        let relay = &c.devices[EGRESS_DEVICE];
        assert_eq!(relay["type"], "proxy");
        assert_eq!(relay["bind"], "container");
        assert_eq!(relay["listen"], "tcp:127.0.0.1:3128");
        assert_eq!(relay["connect"], "unix:/run/unsandbox/egress/us-py-1.sock");
        assert!(c.devices.values().all(|d| d["type"] != "nic"));
    }
}
