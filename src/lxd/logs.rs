//! Each instance's log folder on the host. LXD keeps one per instance
//! (`lxc.conf`, `lxc.log`, `console.log`, ...), named `<project>_<name>`
//! (plain `<name>` in the default project), and LXD 5.0 leaves it behind
//! when it deletes the instance: about 12 KB and a directory entry for every
//! container, so at a few executions a second the host's `/var/log` would
//! fill. The client removes it after each delete.

use std::path::{Path, PathBuf};

/// The log folder that goes with an LXD socket: Debian's package, the snap
/// and Incus keep their logs in different places. `None` for a socket
/// elsewhere (set one with `Lxd::with_log_dir`). Pure.
pub fn dir_for_socket(socket: &Path) -> Option<PathBuf> {
    let dir = match socket.to_str()? {
        "/var/lib/lxd/unix.socket" => "/var/log/lxd",
        "/var/snap/lxd/common/lxd/unix.socket" => "/var/snap/lxd/common/lxd/logs",
        "/var/lib/incus/unix.socket" => "/var/log/incus",
        _ => return None,
    };
    Some(dir.into())
}

/// The log folder of instance `name` of `project` under `dir`; `None` when
/// either name could step out of `dir` (LXD's own names never do). Pure.
pub fn instance_dir(dir: &Path, project: &str, name: &str) -> Option<PathBuf> {
    let plain = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    };
    if !plain(project) || !plain(name) {
        return None;
    }
    Some(if project == "default" {
        dir.join(name)
    } else {
        dir.join(format!("{project}_{name}"))
    })
}

/// Removes instance `name`'s log folder, if there is one. A folder that
/// is not there (a pod without the host's log folder mounted, a daemon
/// that removed it itself) is not an error; any other failure is logged.
pub async fn remove(dir: &Path, project: &str, name: &str) {
    let Some(path) = instance_dir(dir, project, name) else {
        return;
    };
    match tokio::fs::remove_dir_all(&path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an instance's log folder")
        }
    }
}

/// Removes the log folders of `project`'s instances that no longer exist
/// (`exists` says which do) and were last changed at least `quiet` ago: what
/// a delete raced (LXD may write a folder again while it deletes), a crash
/// left, or an older release did not remove. A folder changed more
/// recently may belong to an instance created after the listing. Returns
/// how many it removed.
pub async fn sweep(
    dir: &Path,
    project: &str,
    exists: impl Fn(&str) -> bool,
    quiet: std::time::Duration,
) -> usize {
    let prefix = if project == "default" {
        String::new()
    } else {
        format!("{project}_")
    };
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return 0;
    };
    let mut removed = 0;
    while let Ok(Some(e)) = entries.next_entry().await {
        let file = e.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_prefix(prefix.as_str())) else {
            continue;
        };
        // In the default project a folder is the bare name; other
        // projects' folders (with an underscore) are not its instances.
        if (prefix.is_empty() && name.contains('_')) || exists(name) {
            continue;
        }
        let old = e
            .metadata()
            .await
            .ok()
            .filter(|m| m.is_dir())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= quiet);
        if old {
            remove(dir, project, name).await;
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_per_instance_under_the_daemons_log_folder() {
        let d = dir_for_socket(Path::new("/var/lib/lxd/unix.socket")).unwrap();
        assert_eq!(d, Path::new("/var/log/lxd"));
        assert_eq!(
            dir_for_socket(Path::new("/var/snap/lxd/common/lxd/unix.socket")).unwrap(),
            Path::new("/var/snap/lxd/common/lxd/logs")
        );
        assert_eq!(dir_for_socket(Path::new("/tmp/lxd.sock")), None);
        assert_eq!(
            instance_dir(&d, "unsandbox", "us-small-1a2b").unwrap(),
            Path::new("/var/log/lxd/unsandbox_us-small-1a2b")
        );
        assert_eq!(
            instance_dir(&d, "default", "c1").unwrap(),
            Path::new("/var/log/lxd/c1")
        );
        for (project, name) in [
            ("p", ".."),
            ("p", "a/b"),
            ("..", "c"),
            ("p/..", "c"),
            ("", "c"),
        ] {
            assert_eq!(instance_dir(&d, project, name), None, "{project} {name}");
        }
    }

    #[tokio::test]
    async fn removing_takes_the_folder_and_nothing_else() {
        let root = std::env::temp_dir().join(format!("unsandbox-logs-{}", std::process::id()));
        let mine = root.join("p_c1");
        let other = root.join("p_c10");
        for d in [&mine, &other] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("lxc.log"), b"x").unwrap();
        }
        remove(&root, "p", "c1").await;
        assert!(!mine.exists());
        assert!(other.join("lxc.log").exists());
        remove(&root, "p", "c1").await; // gone already: not an error
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[tokio::test]
    async fn a_sweep_takes_quiet_folders_of_the_projects_instances_that_are_gone() {
        let root = std::env::temp_dir().join(format!("unsandbox-sweep-{}", std::process::id()));
        for f in ["p_gone", "p_here", "q_gone", "lxd.log"] {
            let path = root.join(f);
            if f.ends_with(".log") {
                std::fs::create_dir_all(&root).unwrap();
                std::fs::write(path, b"x").unwrap();
            } else {
                std::fs::create_dir_all(path).unwrap();
            }
        }
        let exists = |n: &str| n == "here";
        let fresh = std::time::Duration::from_secs(3600);
        assert_eq!(
            sweep(&root, "p", exists, fresh).await,
            0,
            "changed just now"
        );
        assert_eq!(sweep(&root, "p", exists, Default::default()).await, 1);
        assert!(!root.join("p_gone").exists());
        for kept in ["p_here", "q_gone", "lxd.log"] {
            assert!(root.join(kept).exists(), "{kept}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
