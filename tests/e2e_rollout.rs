//! End to end on the real LXD daemon: an image rebuilt behind its alias (a
//! new fingerprint) is noticed, smoke-tested while the old image serves,
//! and rolled out `maxUnavailable` at a time.
//!
//! The second image is the small image with other metadata (so another
//! fingerprint), imported once under `FIXTURE` and kept for later runs;
//! the test's own alias is retargeted from one to the other and removed at
//! the end. No image is ever deleted.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Harness, resources, wait_for};
use serde_json::json;

/// Alias of the second image, kept between runs.
const FIXTURE: &str = "unsandbox-small-rollout-fixture";

const POOL: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: small, namespace: t}\nspec:\n  image: small\n  warm: 2\n  rollout: {strategy: Rolling, maxUnavailable: 1}\n";

fn lxc(args: &[&str]) -> Result<String, String> {
    let out = Command::new("lxc")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "lxc {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The fingerprint an alias (of the default project) points at.
fn target(alias: &str) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_str(&lxc(&["query", &format!("/1.0/images/aliases/{alias}")])?)
            .map_err(|e| e.to_string())?;
    v["target"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| format!("alias {alias}: no target in {v}"))
}

/// The second image's fingerprint, importing it first when missing: the
/// small image's files with a metadata file that says otherwise.
fn second_image() -> String {
    if let Ok(fp) = target(FIXTURE) {
        return fp;
    }
    let dir = std::env::temp_dir().join(format!("unsandbox-rollout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("meta")).unwrap();
    let base = dir.join("small");
    lxc(&["image", "export", "unsandbox-small", base.to_str().unwrap()]).unwrap();
    let meta = dir.join("meta");
    let tar = |args: &[&str]| {
        let ok = Command::new("tar").args(args).status().unwrap().success();
        assert!(ok, "tar {args:?}");
    };
    tar(&["-xzf", base.to_str().unwrap(), "-C", meta.to_str().unwrap()]);
    let yaml = meta.join("metadata.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap();
    std::fs::write(&yaml, format!("{text}  unsandbox.test: rollout-fixture\n")).unwrap();
    let repacked = dir.join("meta.tar.gz");
    tar(&[
        "-czf",
        repacked.to_str().unwrap(),
        "-C",
        meta.to_str().unwrap(),
        "metadata.yaml",
    ]);
    let rootfs = dir.join("small.root");
    lxc(&[
        "image",
        "import",
        repacked.to_str().unwrap(),
        rootfs.to_str().unwrap(),
        "--alias",
        FIXTURE,
    ])
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    target(FIXTURE).unwrap()
}

/// The test's own alias; removed (the alias only) when dropped.
struct Alias(String);

impl Alias {
    fn create(fingerprint: &str) -> Self {
        let name = format!(
            "unsandbox-rollout-{:06x}",
            rand::random::<u32>() & 0xff_ffff
        );
        lxc(&["image", "alias", "create", &name, fingerprint]).unwrap();
        Alias(name)
    }

    /// Points the alias at another image, as a rebuild does.
    fn retarget(&self, fingerprint: &str) {
        let body = json!({"target": fingerprint, "description": ""}).to_string();
        lxc(&[
            "query",
            "-X",
            "PUT",
            &format!("/1.0/images/aliases/{}", self.0),
            "-d",
            &body,
        ])
        .unwrap();
    }
}

impl Drop for Alias {
    fn drop(&mut self) {
        let _ = lxc(&["image", "alias", "delete", &self.0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_image_is_proven_then_rolled_out_one_container_at_a_time() {
    let old = target("unsandbox-small").expect("the small image (tests/run.sh builds it)");
    let new = second_image();
    assert_ne!(old, new);
    let alias = Alias::create(&old);
    let mut res = resources(POOL);
    res.images[0].spec.source = unsandbox::crd::ImageSource {
        alias: Some(alias.0.clone()),
        ..Default::default()
    };
    let h = Harness::start("rollout", res).await;
    h.wait_warm("t/small", 2).await;
    let report = |h: &Harness| h.agent.reports().into_iter().next().unwrap().node;
    assert_eq!(report(&h).image.as_deref(), Some(&old[..12]));
    let before = h.running().await;
    assert_eq!(before.len(), 2);

    // Rebuilt: noticed at the next lookup (at most 10 s), proven, rolled out.
    let start = Instant::now();
    alias.retarget(&new);
    let mut fewest = 2;
    let agent = h.agent.clone();
    let (lxd, new12) = (h.lxd.clone(), new[..12].to_string());
    wait_for(
        "every warm container to come from the new image",
        Duration::from_secs(50),
        || {
            let (agent, lxd, before, new12) =
                (agent.clone(), lxd.clone(), before.clone(), new12.clone());
            let warm = agent.warm_of("t/small");
            fewest = fewest.min(warm);
            async move {
                let node = agent.reports().into_iter().next().unwrap().node;
                let running: Vec<String> = lxd
                    .instances()
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|i| i.is_running() && !i.name.starts_with("us-tpl-"))
                    .map(|i| i.name)
                    .collect();
                node.image.as_deref() == Some(new12.as_str())
                    && node.rollout.is_none()
                    && node.warm == 2
                    && running.len() == 2
                    && running.iter().all(|c| !before.contains(c))
            }
        },
    )
    .await;
    eprintln!("rolled out in {:?}", start.elapsed());
    assert!(fewest >= 1, "at most one below the warm count at a time");
    let node = report(&h);
    assert!(node.ready && node.message.is_none(), "{node:?}");

    let (status, body) = h.execute("python", json!({"code": "print(6 * 7)"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stdout"], "42\n");
    h.finish().await;
}
