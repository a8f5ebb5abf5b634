//! The core's decisions, event by event, with no host at all.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::agent::keys;
use crate::crd::{ExecutorPool, LanguageImage};

const IMAGE: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: LanguageImage\nmetadata: {name: small}\nspec:\n  source: {alias: unsandbox-small}\n  languages: [{name: python, sourceFile: m.py, run: python3 m.py}]\n";

fn pool(warm: u32, memory: u32) -> ExecutorPool {
    serde_yaml::from_str(&format!(
        "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {{name: p, namespace: t}}\nspec: {{image: small, warm: {warm}, limits: {{memoryMib: {memory}}}}}\n"
    ))
    .unwrap()
}

fn resources(pools: Vec<ExecutorPool>) -> Resources {
    let image: LanguageImage = serde_yaml::from_str(IMAGE).unwrap();
    Resources::listed(pools, vec![image], None)
}

/// The small image's source, as the test LanguageImage names it.
fn small() -> crate::crd::ImageSource {
    crate::crd::ImageSource {
        alias: Some("unsandbox-small".into()),
        ..Default::default()
    }
}

/// A fresh core (as after a restart) applying `pools`, its image ready, the
/// host not listed yet.
fn with_image(pools: Vec<ExecutorPool>, now: Instant) -> Core {
    let mut core = Core::new("n1");
    core.resources(&resources(pools));
    core.tick(now, wall());
    core.image_resolved(small(), Ok(ready_image()), now);
    core.tick(now, wall());
    core
}

fn ready_image() -> ImageReady {
    ImageReady {
        fingerprint: "fp1".into(),
        versions: BTreeMap::new(),
    }
}

fn wall() -> Timestamp {
    Timestamp::now()
}

fn launches(effects: &[Effect]) -> Vec<LaunchOrder> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Launch(o) => Some(o.clone()),
            _ => None,
        })
        .collect()
}

fn destroys(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Destroy { container, .. } => Some(container.0.clone()),
            _ => None,
        })
        .collect()
}

fn smokes(effects: &[Effect]) -> Vec<SmokeOrder> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Smoke(o) => Some(o.clone()),
            _ => None,
        })
        .collect()
}

/// A core with pool t/p (`warm` wanted) whose image is ready and whose host
/// has been listed empty; returns it with the launches and smoke suite it
/// ordered.
fn started(warm: u32) -> (Core, Vec<LaunchOrder>, Vec<SmokeOrder>) {
    started_with(pool(warm, 256))
}

fn started_with(pool: ExecutorPool) -> (Core, Vec<LaunchOrder>, Vec<SmokeOrder>) {
    let now = Instant::now();
    let mut core = Core::new("n1");
    assert!(core.resources(&resources(vec![pool])));
    let first = core.tick(now, wall());
    assert!(first.contains(&Effect::EnsureImage(small())));
    core.image_resolved(small(), Ok(ready_image()), now);
    let before_listing = core.tick(now, wall());
    assert!(before_listing.contains(&Effect::List));
    assert!(
        launches(&before_listing).is_empty() && smokes(&before_listing).is_empty(),
        "nothing is launched for a shape before the host was listed"
    );
    assert!(core.listing(&[]).is_empty());
    let effects = core.tick(now, wall());
    let (l, s) = (launches(&effects), smokes(&effects));
    (core, l, s)
}

/// `started`, with every launch and the smoke suite finished well.
fn filled(warm: u32) -> Core {
    filled_with(pool(warm, 256))
}

fn filled_with(pool: ExecutorPool) -> Core {
    let now = Instant::now();
    let (mut core, orders, smoke) = started_with(pool);
    for o in &orders {
        let out = core.launched(&o.container, LaunchOutcome::Ready, now);
        assert_eq!(out, [Effect::WarmAdded(o.pool.clone())]);
    }
    let checks = vec![crate::agent::smoke::LanguageCheck {
        language: "python".into(),
        passed: true,
        error: None,
        compile_ms: None,
        run_ms: 1,
    }];
    let out = core.smoke_finished(&smoke[0], Some(checks), false, now);
    assert!(out.is_empty());
    assert!(core.container(smoke[0].launch.container.as_str()).is_none());
    core.tick(now, wall());
    core
}

fn instance(name: &str, pool: &str, hash: &str, running: bool) -> InstanceInfo {
    InstanceInfo {
        name: name.into(),
        status: if running { "Running" } else { "Stopped" }.into(),
        ephemeral: false,
        config: BTreeMap::from([
            (keys::MANAGED.to_string(), "true".to_string()),
            (keys::NODE.to_string(), "n1".to_string()),
            (keys::POOL.to_string(), pool.to_string()),
            (keys::SPEC.to_string(), hash.to_string()),
        ]),
    }
}

#[test]
fn nothing_is_decided_before_a_complete_listing() {
    let mut core = Core::new("n1");
    let mut partial = resources(vec![]);
    partial.complete = false;
    assert!(!core.resources(&partial));
    assert!(core.tick(Instant::now(), wall()).is_empty());
    assert!(!core.listed());
    assert!(core.pools().next().is_none());
    // Even a listing of the host changes nothing: no pool is known yet,
    // but no pool wants nothing either.
    assert!(core.resources(&resources(vec![pool(1, 256)])));
    assert!(core.listed());
}

#[test]
fn a_pool_fills_to_its_warm_count_and_proves_its_languages_once() {
    let (core, orders, smoke) = started(3);
    assert_eq!(orders.len(), 3);
    assert_eq!(smoke.len(), 1, "one smoke suite per shape");
    let p = core.pool("t/p").unwrap();
    assert_eq!((p.launching(), p.warm_count()), (3, 0));
    assert!(!p.ready());

    let core = filled(3);
    let p = core.pool("t/p").unwrap();
    assert_eq!((p.launching(), p.warm_count(), p.busy()), (0, 3, 0));
    assert!(p.ready());
    assert!(!core.in_flight());
}

#[test]
fn a_taken_container_is_destroyed_and_replaced_at_once() {
    let mut core = filled(2);
    let now = Instant::now();
    let c = core.take("t/p", Instant::now()).unwrap();
    let p = core.pool("t/p").unwrap();
    assert_eq!((p.warm_count(), p.busy()), (1, 1));
    let out = core.tick(now, wall());
    assert_eq!(launches(&out).len(), 1, "a replacement launches at once");
    assert_eq!(
        destroys(&core.released(&c, true, Instant::now())),
        std::slice::from_ref(&c.0)
    );
    assert_eq!(core.pool("t/p").unwrap().busy(), 0);
    assert_eq!(core.container(c.as_str()).unwrap().phase, Phase::Destroying);
    core.destroyed(&c);
    assert!(core.container(c.as_str()).is_none());
}

#[test]
fn replacements_wait_for_running_executions_while_the_pool_keeps_its_reserve() {
    assert_eq!(
        [0, 1, 2, 3, 4, 5, 10].map(reserve),
        [1, 1, 1, 2, 2, 3, 5],
        "half the target, at least one"
    );
    let mut core = filled(4);
    let key = PoolKey::parse("t/p");
    let now = Instant::now();
    assert!(core.launch_may_start(&key), "nothing runs: at once");
    let a = core.take("t/p", now).unwrap();
    let b = core.take("t/p", now).unwrap();
    assert_eq!(core.pool("t/p").unwrap().warm_count(), 2);
    assert!(
        !core.launch_may_start(&key),
        "two running, two of four warm: the replacements wait"
    );
    core.released(&a, true, now);
    assert!(!core.launch_may_start(&key), "one still runs");
    assert!(
        core.lifecycle_one_at_a_time(&key, now),
        "two of four warm is the reserve, one execution runs: one at a time"
    );
    let c = core.take("t/p", now).unwrap();
    assert!(
        core.launch_may_start(&key),
        "one of four warm is under the reserve: launch although executions run"
    );
    assert!(
        core.lifecycle_urgent(&key) && !core.lifecycle_one_at_a_time(&key, now),
        "under the reserve: side by side"
    );
    core.released(&b, true, now);
    core.released(&c, true, now);
    assert!(core.launch_may_start(&key));
    // Nothing runs: one at a time only while takes are recent.
    let mut quiet = filled(4);
    let d = quiet.take("t/p", now).unwrap();
    quiet.released(&d, true, now);
    assert!(!quiet.lifecycle_urgent(&key));
    assert!(
        quiet.lifecycle_one_at_a_time(&key, now),
        "taken just now: still serving"
    );
    assert!(
        !quiet.lifecycle_one_at_a_time(&key, now + SERVING_QUIET),
        "nothing runs and nothing was taken for a while: side by side"
    );
    // A pool of one launches at once: its reserve is its only container.
    let mut one = filled(1);
    let _d = one.take("t/p", now).unwrap();
    assert!(one.launch_may_start(&key));
    assert!(core.launch_may_start(&PoolKey::parse("t/gone")));
}

#[test]
fn a_clean_executions_container_may_be_stopped_after_the_running_executions() {
    let mut core = filled(4);
    let key = PoolKey::parse("t/p");
    let now = Instant::now();
    assert!(core.destroy_may_start(&key), "nothing runs");
    let a = core.take("t/p", now).unwrap();
    let b = core.take("t/p", now).unwrap();
    let destroy_of = |effects: Vec<Effect>| match effects.as_slice() {
        [Effect::Destroy { deferrable, .. }] => *deferrable,
        other => panic!("expected one destroy, got {other:?}"),
    };
    assert!(
        destroy_of(core.released(&a, true, now)),
        "ended clean: may wait"
    );
    assert!(
        !core.destroy_may_start(&key),
        "b runs and the pool keeps its reserve: the stop waits"
    );
    let c = core.take("t/p", now).unwrap();
    assert!(
        core.destroy_may_start(&key),
        "one of four warm: under the reserve, stops go at once"
    );
    assert!(
        !destroy_of(core.released(&b, false, now)),
        "an anomaly: stopped at once"
    );
    core.released(&c, true, now);
    assert!(core.destroy_may_start(&key));
    let mut core2 = filled(4);
    let _d = core2.take("t/p", now).unwrap();
    assert!(!core2.destroy_may_start(&key));
    core2.stop_taking();
    assert!(core2.destroy_may_start(&key), "stopping: nothing waits");
}

/// A pool of `warm` containers that each serve `executions`.
fn recycling(warm: u32, executions: u32, max_age: Option<u32>) -> ExecutorPool {
    let mut p = pool(warm, 256);
    p.spec.reuse = Some(crate::crd::Reuse {
        executions,
        max_age_seconds: max_age,
    });
    p
}

fn recycles(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Recycle { container, .. } => Some(container.0.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_recycling_pool_takes_without_launching_and_gets_its_container_back() {
    let mut core = filled_with(recycling(2, 3, None));
    let now = Instant::now();
    let c = core.take("t/p", now).unwrap();
    assert!(
        launches(&core.tick(now, wall())).is_empty(),
        "it comes back: no replacement"
    );
    assert_eq!(core.pool("t/p").unwrap().returning(), 1);
    // A clean end: checked, then back at the front of the queue.
    let out = core.released(&c, true, now);
    assert_eq!(recycles(&out), std::slice::from_ref(&c.0));
    assert_eq!(core.container(c.as_str()).unwrap().phase, Phase::Recycling);
    assert!(core.in_flight());
    assert!(launches(&core.tick(now, wall())).is_empty());
    assert_eq!(
        core.recycled(&c, true),
        [Effect::WarmAdded(PoolKey::parse("t/p"))]
    );
    let p = core.pool("t/p").unwrap();
    assert_eq!(
        (p.warm_count(), p.returning(), p.warm[0].clone()),
        (2, 0, c.clone())
    );

    // Second use: still returns. Third (the last of 3): replaced at once,
    // destroyed afterwards even when clean.
    let c2 = core.take("t/p", now).unwrap();
    assert_eq!(c2, c);
    core.released(&c, true, now);
    core.recycled(&c, true);
    let c3 = core.take("t/p", now).unwrap();
    assert_eq!(c3, c);
    assert_eq!(
        launches(&core.tick(now, wall())).len(),
        1,
        "its last execution"
    );
    assert_eq!(
        destroys(&core.released(&c, true, now)),
        std::slice::from_ref(&c.0)
    );
}

#[test]
fn anomalies_failed_checks_and_age_destroy_a_recycling_container() {
    let mut core = filled_with(recycling(2, 100, Some(60)));
    let now = Instant::now();
    // An anomaly (timeout, kill, limit, lost output): destroyed, replaced.
    let a = core.take("t/p", now).unwrap();
    assert_eq!(
        destroys(&core.released(&a, false, now)),
        std::slice::from_ref(&a.0)
    );
    assert_eq!(launches(&core.tick(now, wall())).len(), 1);
    // A check that finds something left: destroyed.
    let b = core.take("t/p", now).unwrap();
    assert_eq!(
        recycles(&core.released(&b, true, now)),
        std::slice::from_ref(&b.0)
    );
    assert_eq!(
        destroys(&core.recycled(&b, false)),
        std::slice::from_ref(&b.0)
    );
    assert_eq!(launches(&core.tick(now, wall())).len(), 1);

    // Past the age limit: not recycled, and taking it launches a replacement.
    let mut core = filled_with(recycling(1, 100, Some(60)));
    let old = now + Duration::from_secs(61);
    let c = core.take("t/p", old).unwrap();
    assert_eq!(core.pool("t/p").unwrap().returning(), 0);
    assert_eq!(launches(&core.tick(old, wall())).len(), 1);
    assert_eq!(
        destroys(&core.released(&c, true, old)),
        std::slice::from_ref(&c.0)
    );

    // A shape change while it ran: the old container does not come back.
    let mut core = filled_with(recycling(1, 100, None));
    let c = core.take("t/p", now).unwrap();
    let mut bigger = recycling(1, 100, None);
    bigger.spec.limits.memory_mib = 512;
    core.resources(&resources(vec![bigger]));
    core.tick(now, wall());
    assert_eq!(
        destroys(&core.released(&c, true, now)),
        std::slice::from_ref(&c.0)
    );
    // Stopping: a recycle that finishes destroys.
    let mut core = filled_with(recycling(1, 100, None));
    let c = core.take("t/p", now).unwrap();
    core.released(&c, true, now);
    core.stop_taking();
    assert_eq!(
        destroys(&core.recycled(&c, true)),
        std::slice::from_ref(&c.0)
    );
}

#[test]
fn shrinking_trims_the_oldest_and_a_shape_change_replaces_everything() {
    let mut core = filled(3);
    let now = Instant::now();
    let oldest = core.pool("t/p").unwrap().warm[0].clone();
    core.resources(&resources(vec![pool(1, 256)]));
    let out = core.tick(now, wall());
    let gone = destroys(&out);
    assert_eq!(gone.len(), 2);
    assert!(gone.contains(&oldest.0));
    assert!(launches(&out).is_empty());

    core.resources(&resources(vec![pool(1, 512)]));
    let out = core.tick(now, wall());
    assert_eq!(
        destroys(&out).len(),
        1,
        "the last warm one, of the old shape"
    );
    assert!(out.contains(&Effect::List), "the new shape is listed first");
    assert!(launches(&out).is_empty());
    let p = core.pool("t/p").unwrap();
    assert!(!p.ready(), "not ready again until refilled and re-proven");
}

#[test]
fn a_deleted_pool_destroys_its_warm_containers_and_keeps_busy_ones_until_released() {
    let mut core = filled(2);
    let now = Instant::now();
    let busy = core.take("t/p", Instant::now()).unwrap();
    core.tick(now, wall());
    core.resources(&resources(vec![]));
    let out = core.tick(now, wall());
    assert_eq!(destroys(&out).len(), 1);
    assert!(out.contains(&Effect::PoolRemoved(PoolKey::parse("t/p"))));
    assert!(core.pool("t/p").is_none());
    assert_eq!(core.containers_of("t/p"), 3, "destroying, busy, launching");
    assert_eq!(
        destroys(&core.released(&busy, true, Instant::now())),
        std::slice::from_ref(&busy.0)
    );
}

#[test]
fn a_launch_that_finishes_for_a_gone_shape_is_destroyed() {
    let (mut core, orders, _) = started(1);
    let now = Instant::now();
    core.resources(&resources(vec![pool(1, 512)]));
    core.tick(now, wall());
    assert!(
        !core.launch_wanted(&orders[0]),
        "skipped if not started yet"
    );
    let out = core.launched(&orders[0].container, LaunchOutcome::Ready, now);
    assert_eq!(destroys(&out), [orders[0].container.0.clone()]);
}

#[test]
fn failed_launches_back_off_and_say_why() {
    let (mut core, orders, _) = started(2);
    let now = Instant::now();
    for o in &orders {
        core.launched(&o.container, LaunchOutcome::Failed("disk full".into()), now);
    }
    let p = core.pool("t/p").unwrap();
    assert_eq!((p.failures(), p.last_error()), (2, Some("disk full")));
    assert_eq!(p.launching(), 0);
    let out = core.tick(now, wall());
    assert!(launches(&out).is_empty(), "backing off");
    let degraded = &core.pool("t/p").unwrap().observed_conditions()[1];
    assert_eq!(degraded.reason, "LaunchFailing");
    let later = now + backoff(2) + Duration::from_millis(1);
    let out = core.tick(later, wall());
    assert_eq!(launches(&out).len(), 2, "tried again after the back-off");
    assert_eq!(backoff(1), Duration::from_secs(1));
    assert_eq!(backoff(20), Duration::from_secs(30));
}

#[test]
fn a_restart_adopts_unused_containers_of_the_current_shape_and_destroys_the_rest() {
    let (mut core, orders, _) = started(2);
    let hash = orders[0].shape.0.clone();
    // A fresh core, as after a restart, with what the earlier run left.
    let now = Instant::now();
    let mut core2 = with_image(vec![pool(2, 256)], now);
    let owned = vec![
        instance("a", "t/p", &hash, true),
        instance("b", "t/p", &hash, true),
        instance("c", "t/p", &hash, true),
        instance("old", "t/p", "other", true),
        instance("gone", "t/gone", &hash, true),
        instance("stopped", "t/p", &hash, false),
    ];
    let out = core2.listing(&owned);
    let mut destroyed = destroys(&out);
    destroyed.sort();
    assert_eq!(destroyed, ["gone", "old", "stopped"]);
    let inspect: Vec<&str> = out
        .iter()
        .filter_map(|e| match e {
            Effect::Inspect { container, .. } => Some(container.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(inspect, ["a", "b", "c"]);
    // While they are inspected nothing is launched in their place.
    assert!(launches(&core2.tick(now, wall())).is_empty());
    assert_eq!(
        core2.inspected(&"a".into(), Some(false), Instant::now()),
        [Effect::Destroy {
            container: "a".into(),
            pool: PoolKey::parse("t/p"),
            deferrable: false,
        }],
        "a used container is never adopted"
    );
    assert_eq!(
        core2
            .inspected(&"b".into(), Some(true), Instant::now())
            .len(),
        1
    );
    assert_eq!(
        core2
            .inspected(&"c".into(), Some(true), Instant::now())
            .len(),
        1
    );
    let p = core2.pool("t/p").unwrap();
    assert_eq!(p.warm_count(), 2);
    assert!(launches(&core2.tick(now, wall())).is_empty(), "full");
    let _ = core.tick(now, wall());
}

#[test]
fn adoption_stops_at_the_warm_count() {
    let (_, orders, _) = started(1);
    let hash = orders[0].shape.0.clone();
    let (mut core, _, _) = started(1);
    let now = Instant::now();
    // The launch of `started` is still running: the pool is full with it.
    let out = core.listing(&[instance("x", "t/p", &hash, true)]);
    assert_eq!(out.len(), 1);
    let out = core.inspected(&"x".into(), Some(true), Instant::now());
    assert_eq!(destroys(&out), ["x"]);
    let _ = core.tick(now, wall());
}

#[test]
fn warm_containers_lost_out_of_band_are_forgotten_and_replaced() {
    let mut core = filled(2);
    let now = Instant::now();
    let warm: Vec<ContainerName> = core.pool("t/p").unwrap().warm.iter().cloned().collect();
    let hash = core.pool("t/p").unwrap().hash().unwrap().0.clone();
    // One was deleted, the other stopped.
    let out = core.listing(&[instance(warm[1].as_str(), "t/p", &hash, false)]);
    assert_eq!(destroys(&out), [warm[1].0.clone()], "the stopped one goes");
    assert_eq!(core.pool("t/p").unwrap().warm_count(), 0);
    let out = core.tick(now, wall());
    assert_eq!(launches(&out).len(), 2);
}

#[test]
fn an_image_that_cannot_be_had_is_a_problem_and_is_tried_again() {
    let now = Instant::now();
    let mut core = Core::new("n1");
    core.resources(&resources(vec![pool(1, 256)]));
    core.tick(now, wall());
    let source = small();
    core.image_resolved(source.clone(), Err("no such image".into()), now);
    let out = core.tick(now, wall());
    assert!(launches(&out).is_empty());
    let p = core.pool("t/p").unwrap();
    assert_eq!(p.problem().unwrap().message, "no such image");
    let out = core.tick(now + IMAGE_RETRY, wall());
    assert!(out.contains(&Effect::EnsureImage(source)));
}

#[test]
fn take_says_whether_waiting_can_help() {
    let mut core = filled(1);
    assert!(core.take("t/p", Instant::now()).is_ok());
    assert_eq!(
        core.take("t/p", Instant::now()),
        Err(TakeError::Empty {
            none_can_come: false
        })
    );
    assert_eq!(
        core.take("t/nope", Instant::now()),
        Err(TakeError::NotServed)
    );
    let mut zero = filled(1);
    zero.resources(&resources(vec![pool(0, 256)]));
    zero.tick(Instant::now(), wall());
    assert_eq!(zero.none_can_come("t/p"), Some(true));
    assert_eq!(
        zero.take("t/p", Instant::now()),
        Err(TakeError::Empty {
            none_can_come: true
        })
    );
}

#[test]
fn a_retired_core_ignores_later_resources() {
    let mut core = filled(1);
    core.retire();
    assert!(!core.resources(&resources(vec![pool(1, 256)])));
    assert!(launches(&core.tick(Instant::now(), wall())).is_empty());
    assert!(core.pools().next().is_none());
}

#[test]
fn an_autoscaled_pool_follows_its_demand() {
    let mut autoscaled = pool(1, 256);
    autoscaled.spec.autoscale = Some(crate::crd::Autoscale {
        min: 1,
        max: 8,
        headroom_percent: 150,
    });
    let start = Instant::now();
    let mut core = Core::new("n1");
    core.resources(&resources(vec![autoscaled]));
    core.tick(start, wall());
    let source = small();
    core.image_resolved(source, Ok(ready_image()), start);
    core.tick(start, wall());
    core.listing(&[]);
    let out = core.tick(start, wall());
    assert_eq!(launches(&out).len(), 1, "quiet: the minimum");
    let p = core.pool("t/p").unwrap();
    assert!(p.autoscale_reason().unwrap().contains("0.0 takes/s"));

    // Launches take 2 s; then 10 containers are taken in 5 s (2/s):
    // 2/s × 2 s × 1.5 = 6 warm.
    let first = launches(&out)[0].container.clone();
    let ready = start + Duration::from_secs(2);
    core.launched(&first, LaunchOutcome::Ready, ready);
    for i in 0..10u64 {
        let now = ready + Duration::from_millis(500 * i);
        let out = core.tick(now, wall());
        for o in launches(&out) {
            core.launched(
                &o.container,
                LaunchOutcome::Ready,
                now + Duration::from_secs(2),
            );
        }
        if let Ok(c) = core.take("t/p", now) {
            core.released(&c, true, Instant::now());
            core.destroyed(&c);
        }
    }
    let now = ready + Duration::from_secs(5);
    core.tick(now, wall());
    let p = core.pool("t/p").unwrap();
    assert_eq!(p.target(), 6, "{:?}", p.autoscale_reason());
    let report = status::node_status(p, "n1");
    assert_eq!(report.desired, 6);
    assert!(
        p.observed_conditions()[0].message.contains("autoscale: "),
        "{:?}",
        p.observed_conditions()
    );

    // Host memory pressure: back to the minimum at once.
    core.memory_pressure(true);
    let out = core.tick(now, wall());
    assert_eq!(core.pool("t/p").unwrap().target(), 1);
    assert!(!destroys(&out).is_empty(), "surplus warm containers go");
    core.memory_pressure(false);

    // A quiet minute later: the minimum again.
    core.tick(now + Duration::from_secs(61), wall());
    assert_eq!(core.pool("t/p").unwrap().target(), 1);
}

#[test]
fn a_draining_core_hands_out_nothing_and_serves_nothing() {
    let mut core = filled(2);
    assert!(!status::serving(&core).is_empty());
    core.stop_taking();
    assert!(core.stopping());
    assert_eq!(core.take("t/p", Instant::now()), Err(TakeError::NotServed));
    assert!(status::serving(&core).is_empty());
    assert_eq!(choose::pending(&core), Some(choose::Blocker::Draining));
    let e = choose::choose(&core, "python", crate::crd::NetworkTier::Zerotrust).unwrap_err();
    assert!(matches!(
        e,
        choose::ChoiceError::Blocked {
            blocker: choose::Blocker::Draining,
            ..
        }
    ));
    // The warm containers stay for the next start.
    let out = core.tick(Instant::now(), wall());
    assert!(destroys(&out).is_empty());
    assert_eq!(core.pool("t/p").unwrap().warm_count(), 2);
}

#[test]
fn adoption_does_not_depend_on_the_order_of_inspections() {
    let (_, orders, _) = started(2);
    let hash = orders[0].shape.0.clone();
    let now = Instant::now();
    let mut core = with_image(vec![pool(2, 256)], now);
    let owned = ["a", "b", "used"].map(|n| instance(n, "t/p", &hash, true));
    assert_eq!(core.listing(&owned).len(), 3);
    // The two unused ones are inspected before the used one.
    assert_eq!(
        core.inspected(&"a".into(), Some(true), Instant::now())
            .len(),
        1
    );
    assert_eq!(
        core.inspected(&"b".into(), Some(true), Instant::now())
            .len(),
        1
    );
    assert_eq!(
        destroys(&core.inspected(&"used".into(), Some(false), Instant::now())),
        ["used"]
    );
    assert_eq!(core.pool("t/p").unwrap().warm_count(), 2);
}

#[test]
fn a_semitrusted_pool_is_served_only_where_the_egress_proxy_runs() {
    let semi: ExecutorPool = serde_yaml::from_str(
        "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: p, namespace: t}\nspec: {image: small, warm: 1, network: semitrusted}\n",
    )
    .unwrap();
    let now = Instant::now();
    let mut core = with_image(vec![semi.clone()], now);
    core.listing(&[]);
    let p = core.pool("t/p").unwrap();
    let problem = p.problem().expect("no proxy here");
    assert_eq!(problem.reason, Reason::NetworkTierUnsupported);
    assert!(
        launches(&core.tick(now, wall())).is_empty(),
        "nothing starts"
    );

    let mut core = Core::new("n1");
    core.offer_semitrusted(true);
    core.resources(&resources(vec![semi]));
    core.tick(now, wall());
    core.image_resolved(small(), Ok(ready_image()), now);
    core.tick(now, wall());
    core.listing(&[]);
    let effects = core.tick(now, wall());
    let orders = launches(&effects);
    assert!(!orders.is_empty());
    assert_eq!(orders[0].spec.network, NetworkTier::Semitrusted);
    assert!(
        orders[0].ready_command[2].contains("ip link set lo up"),
        "its containers bring up loopback"
    );
}

mod rollout;
