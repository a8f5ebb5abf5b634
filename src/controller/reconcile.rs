//! The ExecutorPool and LanguageImage reconcilers: read what a pool refers to
//! from the caches, validate, aggregate its nodes' reports, write status;
//! hold a finalizer until the agents have removed the pool's containers, and
//! one on each image until no pool refers to it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::aggregate::{
    Cleanup, Observed, Summary, cleanup, covered_nodes, summarize, terminating,
};
use super::in_use::{IN_USE_FINALIZER, image_conditions, name_some, users};
use super::{Context, Error, finalizer};
use crate::crd::condition::{self, Condition, Desired, READY, Reason};
use crate::crd::{ExecutorPool, LanguageImage};

/// Finalizer that keeps a deleted pool until its containers are gone.
pub const FINALIZER: &str = "unsandbox.com/containers";
/// Field manager of everything the controller writes.
pub const MANAGER: &str = "unsandbox-controller";

/// How often a deleted pool is looked at while nodes remove its containers.
const CLEANUP_POLL: Duration = Duration::from_secs(3);
/// Longest wait between two looks at a pool that is not being deleted.
const REFRESH: Duration = Duration::from_secs(60);
/// How often a deleted image still in use is looked at (pool events wake it
/// sooner; this covers events missed while a watch restarted).
const IN_USE_POLL: Duration = Duration::from_secs(30);

/// Reconciles one ExecutorPool.
pub async fn pool(obj: Arc<ExecutorPool>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = std::time::Instant::now();
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let api: Api<ExecutorPool> = Api::namespaced(ctx.client.clone(), &ns);
    let ours = obj.finalizers().iter().any(|f| f == FINALIZER);
    let result = match (obj.metadata.deletion_timestamp.is_some(), ours) {
        (true, false) => Ok(Action::await_change()),
        (true, true) => release_when_clean(&obj, &api, &ctx).await,
        // The patch's own watch event brings the pool back with it.
        (false, false) => finalizer::add(&api, &*obj, FINALIZER)
            .await
            .map(|_| Action::await_change()),
        (false, true) => apply(&obj, &api, &ctx).await,
    };
    ctx.metrics
        .reconcile_seconds
        .observe(start.elapsed().as_secs_f64());
    result
}

/// The pool's summary from the caches at `now`.
fn observe(p: &ExecutorPool, ctx: &Context, now: Timestamp) -> Summary {
    let image = ctx.caches.image(&p.spec.image);
    let nodes = ctx.caches.nodes();
    let covered = covered_nodes(p, nodes.iter().map(|n| &**n), &ctx.cfg.agent_selector);
    summarize(
        p,
        &Observed {
            image: image.as_deref(),
            covered: &covered,
            agent_selector: &ctx.cfg.agent_selector,
            now,
            stale_after: ctx.node_stale,
        },
    )
}

/// Writes the controller's part of the pool's status, unless it holds
/// already. All of it every time: server-side apply removes fields its
/// manager wrote before and leaves out now.
async fn write_pool_status(
    api: &Api<ExecutorPool>,
    p: &ExecutorPool,
    summary: &Summary,
    desired: &[Desired],
    now: Timestamp,
) -> Result<(), Error> {
    let previous = p.status.clone().unwrap_or_default();
    let conditions = condition::merge(&previous.conditions, desired, p.metadata.generation, now);
    let unchanged = previous.observed_generation == p.metadata.generation
        && previous.desired == summary.desired
        && previous.warm == summary.warm
        && previous.busy == summary.busy
        && previous.nodes_ready.as_deref() == Some(summary.nodes_ready.as_str())
        && previous.conditions == conditions;
    if unchanged {
        return Ok(());
    }
    let status = json!({
        "observedGeneration": p.metadata.generation,
        "desired": summary.desired,
        "warm": summary.warm,
        "busy": summary.busy,
        "nodesReady": summary.nodes_ready,
        "conditions": conditions,
    });
    write_status(api, p, status).await
}

async fn apply(p: &ExecutorPool, api: &Api<ExecutorPool>, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let summary = observe(p, ctx, now);
    write_pool_status(api, p, &summary, &summary.conditions, now).await?;
    let previous = p
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let ready = &summary.conditions[0];
    let stalled = summary
        .conditions
        .iter()
        .any(|c| c.type_ == condition::STALLED && c.status);
    if stalled && reason_of(previous, READY) != Some(ready.reason.as_str()) {
        publish(ctx, p, EventType::Warning, ready.reason, &ready.message).await;
    }
    // A wrong spec waits for a change. Otherwise look again when the first
    // counted node would go stale: a silent agent sends no event.
    Ok(if summary.invalid {
        Action::await_change()
    } else {
        Action::requeue(recheck_in(summary.recheck_at, now))
    })
}

/// Time until `at` (a second late, so the entry is stale by then), within
/// one second and [`REFRESH`].
fn recheck_in(at: Option<Timestamp>, now: Timestamp) -> Duration {
    at.map(|t| {
        let until = t.duration_since(now);
        let until = if until.is_negative() {
            Duration::ZERO
        } else {
            until.unsigned_abs()
        };
        until + Duration::from_secs(1)
    })
    .unwrap_or(REFRESH)
    .clamp(Duration::from_secs(1), REFRESH)
}

/// A deleted pool: wait (saying for whom) until the nodes removed its
/// containers or the grace period ran out, then let it go.
async fn release_when_clean(
    p: &ExecutorPool,
    api: &Api<ExecutorPool>,
    ctx: &Context,
) -> Result<Action, Error> {
    let existing: BTreeSet<String> = ctx
        .caches
        .nodes()
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let now = Timestamp::now();
    match cleanup(p, &existing, now, ctx.cfg.cleanup_grace) {
        Cleanup::Waiting(nodes) => {
            let summary = observe(p, ctx, now);
            write_pool_status(api, p, &summary, &terminating(&nodes), now).await?;
            Ok(Action::requeue(CLEANUP_POLL))
        }
        done => {
            finalizer::remove(api, p, FINALIZER).await?;
            let (type_, reason, note) = release_event(&done, ctx.cfg.cleanup_grace);
            publish(ctx, p, type_, reason, &note).await;
            Ok(Action::await_change())
        }
    }
}

/// The Event that says why a deleted pool was let go: truthful about nodes
/// that still reported containers when the grace period ran out.
fn release_event(done: &Cleanup, grace: Duration) -> (EventType, Reason, String) {
    match done {
        Cleanup::GraceExpired(nodes) => (
            EventType::Warning,
            Reason::CleanupGraceExpired,
            format!(
                "released after the cleanup grace of {} s; {} still reported containers",
                grace.as_secs(),
                nodes.join(", ")
            ),
        ),
        _ => (
            EventType::Normal,
            Reason::ContainersRemoved,
            "every node removed the pool's containers".to_string(),
        ),
    }
}

async fn write_status<K>(api: &Api<K>, obj: &K, status: serde_json::Value) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

fn reason_of<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.as_str())
}

async fn publish<K>(ctx: &Context, obj: &K, type_: EventType, reason: Reason, note: &str)
where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "could not publish an event");
    }
}

/// Reconciles one LanguageImage: its spec is valid or says why not, and it
/// is not deleted while pools refer to it.
pub async fn image(obj: Arc<LanguageImage>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<LanguageImage> = Api::all(ctx.client.clone());
    let pools = ctx.caches.pools();
    let users = users(pools.iter().map(|p| &**p), &obj.name_any());
    let deleting = obj.metadata.deletion_timestamp.is_some();
    if deleting && users.is_empty() {
        finalizer::remove(&api, &*obj, IN_USE_FINALIZER).await?;
        return Ok(Action::await_change());
    }
    if !deleting && finalizer::add(&api, &*obj, IN_USE_FINALIZER).await? {
        // The patch's own watch event brings the image back.
        return Ok(Action::await_change());
    }
    let desired = image_conditions(&obj, &users);
    let previous = obj.status.clone().unwrap_or_default();
    let conditions = condition::merge(
        &previous.conditions,
        &desired,
        obj.metadata.generation,
        Timestamp::now(),
    );
    if previous.conditions != conditions || previous.observed_generation != obj.metadata.generation
    {
        let status =
            json!({"observedGeneration": obj.metadata.generation, "conditions": conditions});
        write_status(&api, &*obj, status).await?;
    }
    if !deleting {
        return Ok(Action::await_change());
    }
    if reason_of(&previous.conditions, READY) != Some(Reason::InUse.as_str()) {
        let note = format!(
            "deletion waits: ExecutorPools {} still use this image",
            name_some(&users)
        );
        publish(&ctx, &*obj, EventType::Warning, Reason::InUse, &note).await;
    }
    Ok(Action::requeue(IN_USE_POLL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recheck_times() {
        let now = Timestamp::from_second(1_000).unwrap();
        let at = |s| Some(Timestamp::from_second(s).unwrap());
        let cases = [
            (None, 60),
            (at(1_010), 11),
            (at(1_000), 1),
            (at(990), 1),
            (at(5_000), 60),
        ];
        for (t, want) in cases {
            assert_eq!(recheck_in(t, now), Duration::from_secs(want), "{t:?}");
        }
    }

    #[test]
    fn release_events_tell_the_truth() {
        let grace = Duration::from_secs(300);
        let (t, reason, note) = release_event(&Cleanup::Clean, grace);
        assert_eq!((t, reason), (EventType::Normal, Reason::ContainersRemoved));
        assert!(note.contains("every node"));
        let (t, reason, note) = release_event(
            &Cleanup::GraceExpired(vec!["n1".into(), "n2".into()]),
            grace,
        );
        assert_eq!(
            (t, reason),
            (EventType::Warning, Reason::CleanupGraceExpired)
        );
        assert_eq!(
            note,
            "released after the cleanup grace of 300 s; n1, n2 still reported containers"
        );
    }
}
