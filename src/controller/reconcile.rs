//! The ExecutorPool and LanguageImage reconcilers: fetch what a pool refers
//! to, validate, aggregate its nodes' reports, write status; hold a finalizer
//! until the agents have removed the pool's containers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::aggregate::{cleanup_done, covered_nodes, summarize};
use super::{Context, Error};
use crate::crd::condition::{self, Desired, READY};
use crate::crd::{ExecutorPool, LanguageImage, validate};

/// Finalizer that keeps a deleted pool until its containers are gone.
pub const FINALIZER: &str = "unsandbox.com/containers";
/// Field manager of everything the controller writes.
pub const MANAGER: &str = "unsandbox-controller";

/// Reconciles one ExecutorPool.
pub async fn pool(obj: Arc<ExecutorPool>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let api: Api<ExecutorPool> = Api::namespaced(ctx.client.clone(), &ns);
    let start = std::time::Instant::now();
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(p) => apply(&p, &api, &ctx).await,
            Finalizer::Cleanup(p) => cleanup(&p, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconcile_seconds
        .observe(start.elapsed().as_secs_f64());
    result
}

async fn nodes(ctx: &Context) -> Result<Vec<Node>, Error> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    Ok(api
        .list(&ListParams::default().labels(&ctx.cfg.agent_selector_string()))
        .await?
        .items)
}

async fn apply(p: &ExecutorPool, api: &Api<ExecutorPool>, ctx: &Context) -> Result<Action, Error> {
    let images: Api<LanguageImage> = Api::all(ctx.client.clone());
    let image = images.get_opt(&p.spec.image).await?;
    let nodes = nodes(ctx).await?;
    let covered = covered_nodes(p, &nodes, &ctx.cfg.agent_selector);
    let summary = summarize(p, image.as_ref(), &covered);
    let previous = p.status.clone().unwrap_or_default();
    let conditions = condition::merge(
        &previous.conditions,
        &summary.conditions,
        p.metadata.generation,
        Timestamp::now(),
    );
    let unchanged = previous.observed_generation == p.metadata.generation
        && previous.warm == summary.warm
        && previous.busy == summary.busy
        && previous.nodes_ready.as_deref() == Some(summary.nodes_ready.as_str())
        && previous.conditions == conditions;
    if !unchanged {
        let patch = json!({
            "apiVersion": "unsandbox.com/v1alpha1",
            "kind": "ExecutorPool",
            "status": {
                "observedGeneration": p.metadata.generation,
                "warm": summary.warm,
                "busy": summary.busy,
                "nodesReady": summary.nodes_ready,
                "conditions": conditions,
            }
        });
        api.patch_status(
            &p.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    }
    let ready = &summary.conditions[0];
    let was = previous
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.reason.as_str());
    if summary.invalid && was != Some(ready.reason.as_str()) {
        publish(ctx, p, EventType::Warning, &ready.reason, &ready.message).await;
    }
    // A wrong spec waits for a change; anything else is refreshed regularly
    // (agents' reports arrive as watch events in between).
    Ok(if summary.invalid {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(60))
    })
}

async fn cleanup(p: &ExecutorPool, ctx: &Context) -> Result<Action, Error> {
    let existing: BTreeSet<String> = nodes(ctx)
        .await?
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    if cleanup_done(p, &existing, Timestamp::now(), ctx.cfg.cleanup_grace) {
        publish(
            ctx,
            p,
            EventType::Normal,
            "ContainersRemoved",
            "every node removed the pool's containers",
        )
        .await;
        Ok(Action::await_change())
    } else {
        Err(Error::NotYetClean)
    }
}

async fn publish(ctx: &Context, p: &ExecutorPool, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &p.object_ref(&())).await {
        tracing::warn!(error = %e, "could not publish an event");
    }
}

/// Reconciles one LanguageImage: its spec is valid or says why not.
pub async fn image(obj: Arc<LanguageImage>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<LanguageImage> = Api::all(ctx.client.clone());
    let desired = match validate::image(&obj.spec) {
        Ok(()) => Desired::new(
            READY,
            true,
            "Valid",
            format!("{} languages", obj.spec.languages.len()),
        ),
        Err(e) => Desired::new(READY, false, "InvalidSpec", e.to_string()),
    };
    let previous = obj.status.clone().unwrap_or_default();
    let conditions = condition::merge(
        &previous.conditions,
        &[desired],
        obj.metadata.generation,
        Timestamp::now(),
    );
    if previous.conditions != conditions || previous.observed_generation != obj.metadata.generation
    {
        let patch = json!({
            "apiVersion": "unsandbox.com/v1alpha1",
            "kind": "LanguageImage",
            "status": {"observedGeneration": obj.metadata.generation, "conditions": conditions}
        });
        api.patch_status(
            &obj.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    }
    Ok(Action::await_change())
}
