//! Rollouts to a new image, event by event, with synthetic time: the new
//! image is noticed, proven while the old one serves, then replaces it per
//! `spec.rollout`; a failing one leaves the old one serving.

use super::*;
use crate::agent::smoke::LanguageCheck;
use crate::crd::{RolloutPhase, RolloutStrategy};

fn image(fingerprint: &str) -> ImageReady {
    ImageReady {
        fingerprint: fingerprint.into(),
        versions: BTreeMap::new(),
    }
}

fn python(passed: bool) -> Vec<LanguageCheck> {
    vec![LanguageCheck {
        language: "python".into(),
        passed,
        error: (!passed).then(|| "hello: printed \"\", expected \"hello\\n\"".to_string()),
        compile_ms: None,
        run_ms: 1,
    }]
}

fn rolling(warm: u32, max_unavailable: u32) -> ExecutorPool {
    let mut p = pool(warm, 256);
    p.spec.rollout = Some(crate::crd::Rollout {
        strategy: RolloutStrategy::Rolling,
        max_unavailable: Some(max_unavailable),
    });
    p
}

/// A core filled with `pool` from image `fp1`, then told (after the
/// refresh interval) that the image is now `fp2`; returns it with the time
/// and the smoke order for `fp2`.
fn noticed(pool: ExecutorPool) -> (Core, Instant, SmokeOrder) {
    let mut core = filled_with(pool);
    let later = Instant::now() + IMAGE_REFRESH + Duration::from_secs(1);
    let out = core.tick(later, wall());
    assert_eq!(
        out.iter()
            .filter(|e| **e == Effect::EnsureImage(small()))
            .count(),
        1,
        "looked up again after the refresh interval: {out:?}"
    );
    let again = core.tick(later, wall());
    assert!(
        !again.contains(&Effect::EnsureImage(small())),
        "one lookup at a time"
    );
    core.image_resolved(small(), Ok(image("fp2")), later);
    let out = core.tick(later, wall());
    assert!(destroys(&out).is_empty(), "the old image keeps serving");
    let smoke = smokes(&out);
    assert_eq!(smoke.len(), 1, "the new image is proven first: {out:?}");
    assert_eq!(smoke[0].launch.fingerprint, "fp2");
    let p = core.pool("t/p").unwrap();
    assert_eq!(p.fingerprint(), Some("fp1"));
    let r = p.rollout().unwrap();
    assert_eq!((r.phase, r.to.as_str()), (RolloutPhase::Proving, "fp2"));
    (core, later, smoke[0].clone())
}

fn fingerprints(orders: &[LaunchOrder]) -> Vec<&str> {
    orders.iter().map(|o| o.fingerprint.as_str()).collect()
}

#[test]
fn a_new_fingerprint_is_noticed_and_proven_while_the_old_image_serves() {
    let (mut core, now, _) = noticed(pool(2, 256));
    // While the new image is smoke-tested, the old one serves and is
    // replenished from the old image.
    assert!(core.pool("t/p").unwrap().ready());
    let c = core.take("t/p", now).unwrap();
    let out = core.tick(now, wall());
    assert_eq!(fingerprints(&launches(&out)), ["fp1"]);
    assert_eq!(
        destroys(&core.released(&c, true, now)),
        std::slice::from_ref(&c.0)
    );
    let status = status::node_status(core.pool("t/p").unwrap(), "n1");
    assert_eq!(status.image.as_deref(), Some("fp1"));
    assert_eq!(status.rollout.unwrap().phase, RolloutPhase::Proving);
    assert!(
        core.pool("t/p").unwrap().observed_conditions()[0]
            .message
            .contains("smoke-testing new image fp2"),
    );
}

#[test]
fn on_replenish_old_containers_serve_until_taken() {
    let (mut core, now, smoke) = noticed(pool(3, 256));
    core.smoke_finished(&smoke, Some(python(true)), false, now);
    let out = core.tick(now, wall());
    assert!(destroys(&out).is_empty(), "OnReplenish destroys nothing");
    assert!(launches(&out).is_empty(), "the pool is full");
    let p = core.pool("t/p").unwrap();
    assert_eq!(p.fingerprint(), Some("fp2"));
    assert!(p.ready(), "still serving: {:?}", p.observed_conditions());
    let r = p.rollout().unwrap();
    assert_eq!(
        (
            r.phase,
            r.from.as_deref(),
            r.to.as_str(),
            r.updated,
            r.total
        ),
        (RolloutPhase::Replacing, Some("fp1"), "fp2", 0, 3)
    );
    // Each taken one (old first) is replaced from the new image.
    let old: Vec<ContainerName> = p.warm.iter().cloned().collect();
    for (i, expected) in old.iter().enumerate() {
        let c = core.take("t/p", now).unwrap();
        assert_eq!(&c, expected, "old containers are taken first");
        let out = core.tick(now, wall());
        let l = launches(&out);
        assert_eq!(fingerprints(&l), ["fp2"]);
        core.launched(&l[0].container, LaunchOutcome::Ready, now);
        core.released(&c, true, now);
        core.tick(now, wall());
        let p = core.pool("t/p").unwrap();
        assert_eq!(p.outdated(), 2 - i as u32);
        if i < 2 {
            let r = p.rollout().unwrap();
            assert_eq!((r.updated, r.total), (i as u32 + 1, 3));
            assert!(
                p.observed_conditions()[0]
                    .message
                    .contains(&format!("rolling out: {} of 3 warm updated", i + 1)),
                "{:?}",
                p.observed_conditions()
            );
        }
    }
    let p = core.pool("t/p").unwrap();
    assert!(p.rollout().is_none(), "done");
    assert_eq!(status::node_status(p, "n1").image.as_deref(), Some("fp2"));
}

#[test]
fn rolling_replaces_warm_containers_max_unavailable_at_a_time() {
    let (mut core, now, smoke) = noticed(rolling(3, 1));
    core.smoke_finished(&smoke, Some(python(true)), false, now);
    let mut replaced = 0;
    for round in 0..3 {
        let out = core.tick(now, wall());
        assert_eq!(destroys(&out).len(), 1, "round {round}: one at a time");
        let l = launches(&out);
        assert_eq!(fingerprints(&l), ["fp2"], "round {round}");
        // Nothing more goes until the replacement is warm.
        let out = core.tick(now, wall());
        assert!(destroys(&out).is_empty() && launches(&out).is_empty());
        for c in destroys(&core.tick(now, wall())) {
            core.destroyed(&c.as_str().into());
        }
        core.launched(&l[0].container, LaunchOutcome::Ready, now);
        replaced += 1;
        let p = core.pool("t/p").unwrap();
        assert_eq!(p.warm_count(), 3);
        assert!(p.ready());
    }
    assert_eq!(replaced, 3);
    let out = core.tick(now, wall());
    assert!(destroys(&out).is_empty() && launches(&out).is_empty());
    let p = core.pool("t/p").unwrap();
    assert_eq!((p.outdated(), p.rollout()), (0, None));

    // Two at a time.
    let (mut core, now, smoke) = noticed(rolling(5, 2));
    core.smoke_finished(&smoke, Some(python(true)), false, now);
    let out = core.tick(now, wall());
    assert_eq!((destroys(&out).len(), launches(&out).len()), (2, 2));
}

#[test]
fn a_new_image_that_fails_its_smoke_tests_leaves_the_old_one_serving() {
    let (mut core, now, smoke) = noticed(rolling(2, 2));
    core.smoke_finished(&smoke, Some(python(false)), false, now);
    let out = core.tick(now, wall());
    assert!(destroys(&out).is_empty(), "nothing is replaced");
    assert!(
        smokes(&out).is_empty(),
        "not tried again for the same image"
    );
    assert!(out.contains(&Effect::Report(PoolKey::parse("t/p"))));
    let p = core.pool("t/p").unwrap();
    assert_eq!(p.fingerprint(), Some("fp1"));
    assert!(p.ready());
    let degraded = &p.observed_conditions()[1];
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "RolloutBlocked")
    );
    assert!(
        degraded
            .message
            .contains("new image fp2 failed its smoke tests")
            && degraded.message.contains("keeps serving image fp1")
            && degraded.message.contains("python: hello: printed"),
        "{}",
        degraded.message
    );
    let status = status::node_status(p, "n1");
    assert_eq!(
        status.rollout.as_ref().unwrap().phase,
        RolloutPhase::Blocked
    );
    assert_eq!(status.message, Some(degraded.message.clone()));
    // Python is still served, from the old image, and replenished from it.
    assert!(choose::choose(&core, "python", NetworkTier::Zerotrust).is_ok());
    core.take("t/p", now).unwrap();
    assert_eq!(fingerprints(&launches(&core.tick(now, wall()))), ["fp1"]);
    // Fixed smoke tests (other languages) prove the same image again.
    let fixed: LanguageImage = serde_yaml::from_str(&IMAGE.replace(
        "run: python3 m.py}",
        "run: python3 m.py, smokeTests: [{name: hi, code: 'print(1)', expectedStdout: \"1\\n\"}]}",
    ))
    .unwrap();
    core.resources(&Resources::listed(vec![rolling(2, 2)], vec![fixed], None));
    let s = smokes(&core.tick(now, wall()));
    assert_eq!(s.len(), 1, "the old image's languages first: {s:?}");
    assert_eq!(s[0].launch.fingerprint, "fp1");
    core.smoke_finished(&s[0], Some(python(true)), false, now);
    let s = smokes(&core.tick(now, wall()));
    assert_eq!(s.len(), 1, "then the new image's: {s:?}");
    assert_eq!(s[0].launch.fingerprint, "fp2");
    let p = core.pool("t/p").unwrap();
    assert_eq!(p.rollout().unwrap().phase, RolloutPhase::Proving);
    assert_eq!(p.fingerprint(), Some("fp1"));
    core.smoke_finished(&s[0], Some(python(false)), false, now);
    core.tick(now, wall());
    let p = core.pool("t/p").unwrap();
    assert_eq!(p.rollout().unwrap().phase, RolloutPhase::Blocked);
    // An image rebuilt again is proven again.
    core.image_resolved(small(), Ok(image("fp3")), now);
    let s = smokes(&core.tick(now, wall()));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].launch.fingerprint, "fp3");
}

#[test]
fn executions_running_during_a_rollout_finish_undisturbed() {
    let (mut core, now, smoke) = noticed(rolling(3, 3));
    let busy = core.take("t/p", now).unwrap();
    core.tick(now, wall());
    core.smoke_finished(&smoke, Some(python(true)), false, now);
    let out = core.tick(now, wall());
    assert!(
        !destroys(&out).contains(&busy.0),
        "a busy container is never destroyed"
    );
    assert_eq!(core.container(busy.as_str()).unwrap().phase, Phase::Busy);
    assert_eq!(core.pool("t/p").unwrap().busy(), 1);
    // It is destroyed after its execution, as always.
    assert_eq!(
        destroys(&core.released(&busy, true, now)),
        std::slice::from_ref(&busy.0)
    );
}

#[test]
fn a_failed_lookup_again_keeps_the_image_and_a_new_source_that_fails_blocks() {
    let mut core = filled(2);
    let later = Instant::now() + IMAGE_REFRESH + Duration::from_secs(1);
    core.tick(later, wall());
    core.image_resolved(small(), Err("LXD is restarting".into()), later);
    let out = core.tick(later, wall());
    assert!(destroys(&out).is_empty());
    let p = core.pool("t/p").unwrap();
    assert!(p.ready() && p.rollout().is_none());

    // The LanguageImage now names a recipe that cannot be built here.
    let other: LanguageImage = serde_yaml::from_str(&IMAGE.replace(
        "source: {alias: unsandbox-small}",
        "source: {recipe: small2}",
    ))
    .unwrap();
    core.resources(&Resources::listed(
        vec![pool(2, 256)],
        vec![other.clone()],
        None,
    ));
    let out = core.tick(later, wall());
    let ensure: Vec<&Effect> = out
        .iter()
        .filter(|e| matches!(e, Effect::EnsureImage(_)))
        .collect();
    assert_eq!(ensure, [&Effect::EnsureImage(other.spec.source.clone())]);
    assert!(destroys(&out).is_empty(), "the old image serves meanwhile");
    assert!(core.pool("t/p").unwrap().ready());
    core.image_resolved(other.spec.source.clone(), Err("build failed".into()), later);
    core.tick(later, wall());
    let p = core.pool("t/p").unwrap();
    assert!(p.ready() && p.problem().is_none());
    assert_eq!(p.observed_conditions()[1].reason, "RolloutBlocked");
    assert!(p.observed_conditions()[1].message.contains("build failed"));
}

#[test]
fn changing_the_rollout_setting_alone_replaces_nothing() {
    let mut core = filled(2);
    let now = Instant::now();
    core.resources(&resources(vec![rolling(2, 1)]));
    let out = core.tick(now, wall());
    assert!(destroys(&out).is_empty() && launches(&out).is_empty() && smokes(&out).is_empty());
    assert!(core.pool("t/p").unwrap().ready());
}

#[test]
fn other_limits_during_a_rollout_replace_everything_at_once() {
    let (mut core, now, _) = noticed(pool(2, 256));
    core.resources(&resources(vec![pool(2, 512)]));
    let out = core.tick(now, wall());
    assert_eq!(destroys(&out).len(), 2);
    let p = core.pool("t/p").unwrap();
    assert_eq!(p.fingerprint(), Some("fp2"));
    assert!(p.rollout().is_none());
}

#[test]
fn the_old_shapes_template_stays_while_its_containers_serve() {
    let (mut core, now, smoke) = noticed(pool(1, 256));
    let old = core.pool("t/p").unwrap().hash().unwrap().0.clone();
    let new = smoke.launch.shape.0.clone();
    let template = |hash: &str| {
        let mut t = instance(&keys::template_name(hash, "n1"), "", hash, false);
        t.config.insert(keys::TEMPLATE.into(), "true".into());
        t
    };
    let warm = core.pool("t/p").unwrap().warm[0].clone();
    let listed = [
        template(&old),
        template(&new),
        instance(warm.as_str(), "t/p", &old, true),
    ];
    assert!(destroys(&core.listing(&listed)).is_empty(), "proving");
    core.smoke_finished(&smoke, Some(python(true)), false, now);
    core.tick(now, wall());
    assert!(
        destroys(&core.listing(&listed)).is_empty(),
        "old one serving"
    );
    core.take("t/p", now).unwrap();
    core.released(&warm, true, now);
    core.destroyed(&warm);
    assert_eq!(
        destroys(&core.listing(&listed[..2])),
        [listed[0].name.clone()]
    );
}
