//! Adding and removing the controller's finalizers with JSON patches guarded
//! by a `test` operation (as kube's `finalizer()` helper does), but under the
//! controller's own field manager, so `managedFields` names who wrote them.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Error;
use super::reconcile::MANAGER;

/// The JSON patch that adds `name` to `current`, or `None` when it is there.
/// The `test` makes the patch fail (and the reconcile retry) when someone
/// else changed the list meanwhile: the API server does not deduplicate
/// finalizers.
pub fn add_patch(current: &[String], name: &str) -> Option<Value> {
    if current.iter().any(|f| f == name) {
        return None;
    }
    Some(if current.is_empty() {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [name]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "add", "path": "/metadata/finalizers/-", "value": name},
        ])
    })
}

/// The JSON patch that removes `name` from `current`, or `None` when it is
/// not there. The index is guarded by a `test`, so a list that changed
/// meanwhile makes the patch fail rather than remove another finalizer.
pub fn remove_patch(current: &[String], name: &str) -> Option<Value> {
    let i = current.iter().position(|f| f == name)?;
    let path = format!("/metadata/finalizers/{i}");
    Some(json!([
        {"op": "test", "path": path, "value": name},
        {"op": "remove", "path": path},
    ]))
}

/// Adds finalizer `name` to `obj`; `Ok(false)` when it was already there.
pub async fn add<K>(api: &Api<K>, obj: &K, name: &str) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    send(api, obj, add_patch(obj.finalizers(), name)).await
}

/// Removes finalizer `name` from `obj`; `Ok(false)` when it was not there.
pub async fn remove<K>(api: &Api<K>, obj: &K, name: &str) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    send(api, obj, remove_patch(obj.finalizers(), name)).await
}

async fn send<K>(api: &Api<K>, obj: &K, patch: Option<Value>) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(patch) = patch else {
        return Ok(false);
    };
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    let patch: Patch<()> = Patch::Json(serde_json::from_value(patch)?);
    api.patch(&obj.name_any(), &params, &patch).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches() {
        let f = "unsandbox.com/containers";
        let other = "example.com/other".to_string();
        let cases: [(&[String], Option<Value>, Option<Value>); 3] = [
            (
                &[],
                Some(json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": null},
                    {"op": "add", "path": "/metadata/finalizers", "value": [f]},
                ])),
                None,
            ),
            (
                std::slice::from_ref(&other),
                Some(json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": [other]},
                    {"op": "add", "path": "/metadata/finalizers/-", "value": f},
                ])),
                None,
            ),
            (
                &[other.clone(), f.to_string()],
                None,
                Some(json!([
                    {"op": "test", "path": "/metadata/finalizers/1", "value": f},
                    {"op": "remove", "path": "/metadata/finalizers/1"},
                ])),
            ),
        ];
        for (current, add, remove) in cases {
            assert_eq!(add_patch(current, f), add, "{current:?}");
            assert_eq!(remove_patch(current, f), remove, "{current:?}");
        }
    }
}
