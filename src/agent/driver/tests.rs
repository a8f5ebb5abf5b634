//! The agent against an in-memory host: what `tests/e2e_pool.rs` shows on a
//! real LXD, in milliseconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::*;
use crate::agent::host::fake::FakeHost;
use crate::crd::{ExecutorPool, LanguageImage};

const IMAGE: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: LanguageImage\nmetadata: {name: small}\nspec:\n  source: {alias: unsandbox-small}\n  languages:\n  - {name: python, sourceFile: m.py, run: python3 m.py}\n  - {name: lua, sourceFile: m.lua, run: lua m.lua}\n";

fn pool(warm: u32) -> ExecutorPool {
    serde_yaml::from_str(&format!(
        "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {{name: p, namespace: t}}\nspec: {{image: small, warm: {warm}}}\n"
    ))
    .unwrap()
}

fn listed(pools: Vec<ExecutorPool>) -> Resources {
    let image: LanguageImage = serde_yaml::from_str(IMAGE).unwrap();
    Resources::listed(pools, vec![image], None)
}

struct Node {
    agent: Agent,
    tx: watch::Sender<Resources>,
}

/// An agent of node n1 on `host`, starting from `res`.
fn node(host: &Arc<FakeHost>, res: Resources) -> Node {
    let (tx, rx) = watch::channel(res);
    let cfg = AgentConfig {
        node: "n1".into(),
        storage_pool: "fake".into(),
        images_dir: None,
        launch_parallelism: 4,
        resync_interval: Duration::from_secs(3600),
        templates: false,
        executions_first: true,
    };
    let lxd = Lxd::new("/nonexistent/unix.socket", "unsandbox");
    let host: Arc<dyn ContainerHost> = host.clone();
    let agent = Agent::with_host(host, lxd, cfg, rx, Arc::new(Metrics::new()));
    Node { agent, tx }
}

/// Runs reconcile passes until `done` holds (at most 5 s).
async fn until(agent: &Agent, what: &str, done: impl Fn(&Agent) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        agent.reconcile(false).await;
        if done(agent) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ready(agent: &Agent) -> bool {
    !agent.serving().is_empty() && !agent.inner.lock().core.in_flight()
}

#[tokio::test]
async fn a_pool_fills_serves_and_replaces_each_taken_container() {
    let host = Arc::new(FakeHost::new("n1"));
    let n = node(&host, listed(vec![pool(2)]));
    until(&n.agent, "pool ready", ready).await;
    assert_eq!(host.running().len(), 2);
    let choice = n.agent.choose("python", NetworkTier::Zerotrust).unwrap();
    let lease = n
        .agent
        .acquire(&choice.pool, Instant::now() + Duration::from_secs(1))
        .await
        .unwrap();
    let taken = lease.container.clone();
    drop(lease);
    until(&n.agent, "taken one destroyed and replaced", |a| {
        a.warm_of("t/p") == 2 && !a.tracked().contains(&taken)
    })
    .await;
    assert!(!host.all().contains(&taken), "destroyed after one use");
    assert_eq!(host.running().len(), 2);
}

/// A ready pool of four with two containers taken, one execution each.
async fn two_taken(host: &Arc<FakeHost>) -> (Node, Lease, Lease) {
    let n = node(host, listed(vec![pool(4)]));
    until(&n.agent, "pool ready", ready).await;
    let deadline = Instant::now() + Duration::from_secs(1);
    let first = n.agent.acquire("t/p", deadline).await.unwrap();
    let second = n.agent.acquire("t/p", deadline).await.unwrap();
    (n, first, second)
}

/// Runs reconcile passes for about 200 ms, for what should not happen.
async fn settle(agent: &Agent) {
    for _ in 0..20 {
        agent.reconcile(false).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_clean_executions_container_is_stopped_once_the_other_execution_ends() {
    let host = Arc::new(FakeHost::new("n1"));
    let (n, first, second) = two_taken(&host).await;
    let (used, running) = (first.container.clone(), second.container.clone());
    first.finish(true);
    settle(&n.agent).await;
    assert!(
        host.all().contains(&used),
        "ended clean while another execution runs: its stop waits"
    );
    second.finish(false);
    until(&n.agent, "both destroyed once nothing runs", |_| {
        !host.all().contains(&used) && !host.all().contains(&running)
    })
    .await;
}

#[tokio::test]
async fn an_anomalous_executions_container_is_stopped_at_once() {
    let host = Arc::new(FakeHost::new("n1"));
    let (n, first, _second) = two_taken(&host).await;
    let used = first.container.clone();
    first.finish(false);
    until(&n.agent, "destroyed although an execution runs", |_| {
        !host.all().contains(&used)
    })
    .await;
}

#[tokio::test]
async fn a_replacement_waits_for_the_running_execution_while_the_pool_keeps_its_reserve() {
    let host = Arc::new(FakeHost::new("n1"));
    let n = node(&host, listed(vec![pool(4)]));
    until(&n.agent, "pool ready", ready).await;
    let launched = host.calls().0;
    let lease = n
        .agent
        .acquire("t/p", Instant::now() + Duration::from_secs(1))
        .await
        .unwrap();
    settle(&n.agent).await;
    assert_eq!(
        host.calls().0,
        launched,
        "three of four warm: the replacement waits for the execution"
    );
    drop(lease);
    until(&n.agent, "replaced once the execution ended", |a| {
        a.warm_of("t/p") == 4
    })
    .await;
    assert_eq!(host.calls().0, launched + 1);
}

#[tokio::test]
async fn replacements_that_fell_due_together_go_one_at_a_time_while_the_reserve_holds() {
    let host = Arc::new(FakeHost::with_launch_delay("n1", Duration::from_millis(40)));
    let (n, first, second) = two_taken(&host).await;
    let launched = host.calls().0;
    host.count_launches_at_once_anew();
    first.finish(true);
    second.finish(true);
    until(&n.agent, "both replaced", |a| {
        a.warm_of("t/p") == 4 && host.calls().0 == launched + 2
    })
    .await;
    assert_eq!(
        host.most_launches_at_once(),
        1,
        "two of four warm is the reserve: the replacements go one after the other"
    );
}

#[tokio::test]
async fn replacements_run_side_by_side_when_the_pool_is_under_its_reserve() {
    let host = Arc::new(FakeHost::with_launch_delay("n1", Duration::from_millis(40)));
    let n = node(&host, listed(vec![pool(4)]));
    until(&n.agent, "pool ready", ready).await;
    assert!(
        host.most_launches_at_once() > 1,
        "an empty pool fills in parallel"
    );
    host.count_launches_at_once_anew();
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut leases = Vec::new();
    for _ in 0..3 {
        leases.push(n.agent.acquire("t/p", deadline).await.unwrap());
    }
    until(&n.agent, "refilled while the executions run", |a| {
        a.warm_of("t/p") == 4
    })
    .await;
    assert!(
        host.most_launches_at_once() > 1,
        "one of four warm is under the reserve: the replacements run side by side"
    );
    drop(leases);
}

#[tokio::test]
async fn a_recycling_pool_gets_clean_containers_back_and_destroys_the_rest() {
    let host = Arc::new(FakeHost::new("n1"));
    let mut p = pool(1);
    p.spec.reuse = Some(crate::crd::Reuse {
        executions: 10,
        max_age_seconds: None,
    });
    let n = node(&host, listed(vec![p]));
    until(&n.agent, "pool ready", ready).await;
    let take = || {
        n.agent
            .acquire("t/p", Instant::now() + Duration::from_secs(5))
    };
    let first = take().await.unwrap();
    let name = first.container.clone();
    first.finish(true);
    until(&n.agent, "recycled", |a| a.warm_of("t/p") == 1).await;
    assert_eq!((host.recycles(), host.all()), (1, vec![name.clone()]));
    // A dirty end (the lease dropped without a clean finish): destroyed.
    let second = take().await.unwrap();
    assert_eq!(second.container, name, "the same container served again");
    drop(second);
    until(&n.agent, "replaced", |a| {
        a.warm_of("t/p") == 1 && !a.tracked().contains(&name)
    })
    .await;
    assert_eq!(host.recycles(), 1);
    // A recycle check that finds something left: destroyed, replaced.
    host.fail_recycles(1);
    let third = take().await.unwrap();
    let name = third.container.clone();
    third.finish(true);
    until(&n.agent, "replaced after a failed check", |a| {
        a.warm_of("t/p") == 1 && !a.tracked().contains(&name)
    })
    .await;
    assert!(!host.all().contains(&name));
    assert_eq!(host.recycles(), 2);
}

#[tokio::test]
async fn a_language_that_fails_its_smoke_tests_is_not_served() {
    let host = Arc::new(FakeHost::new("n1"));
    host.fail_language("lua");
    let n = node(&host, listed(vec![pool(1)]));
    until(&n.agent, "pool ready", ready).await;
    assert_eq!(n.agent.serving()[0].languages, ["python"]);
    assert!(matches!(
        n.agent.choose("lua", NetworkTier::Zerotrust),
        Err(ChoiceError::Blocked {
            blocker: Blocker::LanguageFailed { .. },
            ..
        })
    ));
    let report = &n.agent.reports()[0];
    assert_eq!(report.node.unavailable_languages[0].name, "lua");
    // One more pass publishes the gauges for what `until` last saw.
    n.agent.reconcile(false).await;
    let languages = |state: &str| {
        n.agent
            .metrics()
            .languages
            .get_or_create(&crate::metrics::PoolStateLabels {
                pool: "t/p".into(),
                state: state.into(),
            })
            .get()
    };
    assert_eq!(
        [
            languages("served"),
            languages("failed"),
            languages("pending")
        ],
        [1, 1, 0]
    );
}

#[tokio::test]
async fn shrinking_trims_and_deleting_removes_everything() {
    let host = Arc::new(FakeHost::new("n1"));
    let n = node(&host, listed(vec![pool(3)]));
    until(&n.agent, "pool ready", ready).await;
    assert_eq!(host.running().len(), 3);
    n.tx.send(listed(vec![pool(1)])).unwrap();
    until(&n.agent, "trimmed", |_| host.running().len() == 1).await;
    n.tx.send(listed(vec![])).unwrap();
    until(&n.agent, "removed", |a| {
        host.all().is_empty() && a.tracked().is_empty()
    })
    .await;
    assert!(n.agent.reports().is_empty());
}

#[tokio::test]
async fn a_restart_waits_for_a_complete_listing_then_adopts_what_it_left() {
    let host = Arc::new(FakeHost::new("n1"));
    let first = node(&host, listed(vec![pool(2)]));
    until(&first.agent, "pool ready", ready).await;
    let before = host.running();
    let (launches, _) = host.calls();
    // One of them was handed to an execution before the restart.
    host.mark_used(&before[0]);

    let mut partial = listed(vec![]);
    partial.complete = false;
    let second = node(&host, partial);
    for _ in 0..3 {
        assert!(!second.agent.reconcile(true).await);
    }
    assert_eq!(
        host.running(),
        before,
        "nothing decided on a partial listing"
    );
    assert!(second.agent.tracked().is_empty());

    second.tx.send(listed(vec![pool(2)])).unwrap();
    until(&second.agent, "ready after the restart", ready).await;
    let after = host.running();
    assert!(!after.contains(&before[0]), "the used one was destroyed");
    assert!(after.contains(&before[1]), "the unused one was adopted");
    let (launches_after, _) = host.calls();
    // One replacement and one smoke container; nothing else was launched.
    assert_eq!(launches_after - launches, 2);
}

#[tokio::test]
async fn containers_lost_out_of_band_are_replaced_and_strays_removed() {
    let host = Arc::new(FakeHost::new("n1"));
    let n = node(&host, listed(vec![pool(2)]));
    until(&n.agent, "pool ready", ready).await;
    let warm = host.running();
    host.delete_out_of_band(&warm[0]);
    host.stop_out_of_band(&warm[1]);
    host.plant("us-stray-1", "n1", "t/gone", "h");
    host.plant("us-other-node", "n2", "t/p", "h");
    assert!(n.agent.resync().await);
    until(&n.agent, "replaced", |a| {
        a.warm_of("t/p") == 2 && !a.inner.lock().core.in_flight()
    })
    .await;
    let now = host.running();
    assert!(!now.contains(&warm[0]) && !now.contains(&warm[1]));
    assert!(!host.all().contains(&"us-stray-1".to_string()));
    assert!(
        host.all().contains(&"us-other-node".to_string()),
        "another node's container is not ours to remove"
    );
}

#[tokio::test]
async fn failed_launches_back_off_report_and_recover() {
    let host = Arc::new(FakeHost::new("n1"));
    host.fail_launches(2);
    let n = node(&host, listed(vec![pool(1)]));
    until(&n.agent, "a failure reported", |a| {
        a.reports().first().is_some_and(|r| {
            r.node.message.as_deref() == Some("LXD operation failed: no space left on device")
        })
    })
    .await;
    until(&n.agent, "pool ready after the back-off", ready).await;
    let r = &n.agent.reports()[0];
    assert_eq!(r.node.warm, 1);
    assert!(r.node.message.is_none(), "{:?}", r.node.message);
}

#[tokio::test]
async fn an_unavailable_image_is_reported_and_nothing_launches() {
    let host = Arc::new(FakeHost::new("n1"));
    host.fail_images(Some("image unsandbox-small is not in the LXD image store"));
    let n = node(&host, listed(vec![pool(1)]));
    until(&n.agent, "image failure reported", |a| {
        matches!(
            a.choose("python", NetworkTier::Zerotrust),
            Err(ChoiceError::Blocked {
                blocker: Blocker::ImageFailed { .. },
                ..
            })
        )
    })
    .await;
    assert!(host.all().is_empty());
}

#[tokio::test]
async fn a_pool_with_no_warm_container_fails_at_once() {
    let host = Arc::new(FakeHost::new("n1"));
    let n = node(&host, listed(vec![pool(0)]));
    until(&n.agent, "proven", |a| !a.serving().is_empty()).await;
    let start = Instant::now();
    let e = n
        .agent
        .acquire("t/p", start + Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(1), "no wait");
    assert_eq!(
        e,
        AcquireError::NoCapacity(Shortage::NoneWarm { pool: "t/p".into() })
    );
    assert!(e.to_string().contains("keeps no container warm"), "{e}");
    let answer = crate::api::ApiError::from(e);
    assert_eq!(
        (answer.status.as_u16(), answer.code, answer.retry_after),
        (503, "no_capacity", None),
        "waiting will not help: no Retry-After"
    );
}

#[tokio::test]
async fn a_pool_filling_up_is_waited_for_until_the_deadline() {
    let host = Arc::new(FakeHost::new("n1"));
    let n = node(&host, listed(vec![pool(1)]));
    until(&n.agent, "pool ready", ready).await;
    let _held = n
        .agent
        .acquire("t/p", Instant::now() + Duration::from_secs(1))
        .await
        .unwrap();
    // The replacement fails for a while: nothing becomes warm in time.
    host.fail_launches(1000);
    let start = Instant::now();
    let e = n
        .agent
        .acquire("t/p", start + Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(290));
    let AcquireError::NoCapacity(s) = &e else {
        panic!("{e:?}")
    };
    assert!(s.temporary());
    assert_eq!(crate::api::ApiError::from(e).retry_after, Some(1));
}

#[tokio::test]
async fn destroy_all_leaves_nothing_and_later_resources_are_ignored() {
    let host = Arc::new(FakeHost::new("n1"));
    let n = node(&host, listed(vec![pool(2)]));
    until(&n.agent, "pool ready", ready).await;
    host.plant("us-left-1", "n1", "t/p", "old");
    assert!(n.agent.settle(Duration::from_secs(1)).await);
    assert_eq!(n.agent.destroy_all().await.unwrap(), 3);
    assert!(host.all().is_empty());
    n.tx.send(listed(vec![pool(2)])).unwrap();
    n.agent.reconcile(true).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(host.all().is_empty(), "a draining agent launches nothing");
}

#[tokio::test]
async fn a_status_change_wakes_the_reporter() {
    let host = Arc::new(FakeHost::new("n1"));
    let n = node(&host, listed(vec![pool(1)]));
    let changed = n.agent.changed();
    tokio::pin!(changed);
    changed.as_mut().enable();
    n.agent.reconcile(false).await;
    tokio::time::timeout(Duration::from_secs(1), changed)
        .await
        .expect("the first conditions are a change");
}

#[tokio::test]
async fn an_autoscaled_pool_grows_under_a_burst() {
    let host = Arc::new(FakeHost::with_launch_delay(
        "n1",
        Duration::from_millis(300),
    ));
    let mut p = pool(1);
    p.spec.autoscale = Some(crate::crd::Autoscale {
        min: 1,
        max: 6,
        headroom_percent: 150,
    });
    let n = node(&host, listed(vec![p]));
    until(&n.agent, "pool ready", ready).await;
    assert_eq!(n.agent.reports()[0].node.desired, 1, "quiet: the minimum");
    let looping = n.agent.clone();
    let run = tokio::spawn(async move { looping.run(std::future::pending()).await });
    // Four clients, three executions each, back to back: each waits for
    // a container, and launches take a second.
    let clients = (0..4).map(|_| {
        let agent = n.agent.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                let lease = agent
                    .acquire("t/p", Instant::now() + Duration::from_secs(10))
                    .await
                    .unwrap();
                drop(lease);
            }
        })
    });
    for c in futures::future::join_all(clients).await {
        c.unwrap();
    }
    until(&n.agent, "the target grew", |a| {
        a.reports()[0].node.desired > 1
    })
    .await;
    until(&n.agent, "filled to it", |a| {
        a.warm_of("t/p") == a.reports()[0].node.desired
    })
    .await;
    let r = &n.agent.reports()[0];
    assert!(r.node.desired <= 6);
    let ready = r.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains("autoscale: "), "{}", ready.message);
    run.abort();
}

mod rollout;
