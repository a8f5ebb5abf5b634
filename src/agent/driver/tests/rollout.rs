//! A rollout on the fake host: an image rebuilt behind its alias replaces
//! the warm containers `maxUnavailable` at a time; one that fails its smoke
//! tests leaves the old image serving, and the status says so.

use super::*;
use crate::crd::{RolloutPhase, RolloutStrategy};

fn rolling(warm: u32, max_unavailable: u32) -> ExecutorPool {
    let mut p = pool(warm);
    p.spec.rollout = Some(crate::crd::Rollout {
        strategy: RolloutStrategy::Rolling,
        max_unavailable: Some(max_unavailable),
    });
    p
}

/// The images of the pool's running containers (the smoke container
/// left out: it is removed before its results count).
fn images(host: &FakeHost) -> Vec<String> {
    host.images().into_values().collect()
}

fn gauge(agent: &Agent, state: &str) -> i64 {
    agent
        .metrics()
        .rollout
        .get_or_create(&crate::metrics::PoolStateLabels {
            pool: "t/p".into(),
            state: state.into(),
        })
        .get()
}

#[tokio::test]
async fn a_rebuilt_image_rolls_out_and_a_failing_one_is_blocked() {
    let host = Arc::new(FakeHost::new("n1"));
    let n = node(&host, listed(vec![rolling(3, 1)]));
    until(&n.agent, "pool ready", ready).await;
    assert_eq!(images(&host), ["fp-unsandbox-small"; 3]);
    // Look the image up again on every pass.
    n.agent
        .inner
        .lock()
        .core
        .refresh_images_every(Duration::ZERO);

    // Rebuilt behind its alias: proven, then rolled out one at a time.
    host.set_fingerprint("fp-new");
    let fewest = std::cell::Cell::new(3);
    until(&n.agent, "every warm container from the new image", |a| {
        fewest.set(fewest.get().min(a.warm_of("t/p")));
        images(&host) == ["fp-new"; 3] && a.reports()[0].node.rollout.is_none() && ready(a)
    })
    .await;
    assert_eq!(
        fewest.get(),
        2,
        "at most one below the warm count at a time"
    );
    let report = &n.agent.reports()[0];
    assert_eq!(report.node.image.as_deref(), Some("fp-new"));
    n.agent.reconcile(false).await;
    assert_eq!(
        (gauge(&n.agent, "updated"), gauge(&n.agent, "outdated")),
        (3, 0)
    );

    // Rebuilt again, broken: the host keeps serving fp-new and says why.
    host.fail_image_smoke("fp-broken");
    host.set_fingerprint("fp-broken");
    until(&n.agent, "the broken image blocked", |a| {
        a.reports()[0]
            .node
            .rollout
            .as_ref()
            .is_some_and(|r| r.phase == RolloutPhase::Blocked)
    })
    .await;
    let report = &n.agent.reports()[0];
    let r = report.node.rollout.as_ref().unwrap();
    assert_eq!(
        (r.from.as_deref(), r.to.as_str()),
        (Some("fp-new"), "fp-broken")
    );
    assert!(report.node.ready);
    assert!(
        report
            .node
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("new image fp-broken failed its smoke tests"),
        "{:?}",
        report.node.message
    );
    let degraded = report
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(degraded.reason, crate::crd::Reason::RolloutBlocked);
    until(&n.agent, "settled", |a| !a.inner.lock().core.in_flight()).await;
    assert_eq!(images(&host), ["fp-new"; 3], "nothing replaced");
    assert_eq!(n.agent.serving()[0].languages, ["python", "lua"]);
}
