//! Unknown fields, found the way the API server's strict field validation
//! finds them: every key of a document must be a property of the CRD's
//! structural schema (or of ObjectMeta under `metadata`). Without this a
//! typo such as `wram: 5` would be dropped silently by deserialization.

use kube::CustomResourceExt;
use serde_json::Value;

use crate::crd::{ExecutorPool, LanguageImage};

/// Fields of `metadata` (ObjectMeta) a document may set.
const OBJECT_META: &[&str] = &[
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

/// The openAPIV3Schema of a kind's CRD, as JSON.
fn schema(kind: &str) -> Option<Value> {
    let crd = match kind {
        "ExecutorPool" => ExecutorPool::crd(),
        "LanguageImage" => LanguageImage::crd(),
        _ => return None,
    };
    let crd = serde_json::to_value(crd).ok()?;
    Some(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone())
}

/// Paths of the fields of `doc` (an ExecutorPool or LanguageImage document)
/// that its kind does not define, such as `spec.wram`, sorted.
pub fn unknown(kind: &str, doc: &Value) -> Vec<String> {
    let (Some(schema), Value::Object(map)) = (schema(kind), doc) else {
        return vec![];
    };
    let mut out = Vec::new();
    for (key, value) in map {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                if let Value::Object(meta) = value {
                    out.extend(
                        meta.keys()
                            .filter(|k| !OBJECT_META.contains(&k.as_str()))
                            .map(|k| format!("metadata.{k}")),
                    );
                }
            }
            _ => match schema["properties"].get(key) {
                Some(s) => walk(s, value, key, &mut out),
                None => out.push(key.clone()),
            },
        }
    }
    out
}

fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true) {
        return;
    }
    match value {
        Value::Object(map) => {
            let properties = schema["properties"].as_object();
            let additional = schema.get("additionalProperties");
            for (key, v) in map {
                let child = format!("{path}.{key}");
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) => walk(s, v, &child, out),
                    (None, Some(Value::Bool(true))) => {}
                    (None, Some(s @ Value::Object(_))) => walk(s, v, &child, out),
                    // Not an object schema (a type error serde reports) or
                    // a key the schema does not define.
                    (None, _) if properties.is_some() || additional.is_some() => out.push(child),
                    (None, _) => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items").filter(|s| s.is_object()) {
                for (i, v) in items.iter().enumerate() {
                    walk(s, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Value {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        serde_json::to_value(v).unwrap()
    }

    #[test]
    fn a_typo_is_an_unknown_field() {
        let d = doc(
            "kind: ExecutorPool\nmetadata: {name: p, labels: {a: b}, nmae: x}\nspec:\n  image: small\n  wram: 5\n  limits: {memoryMib: 256, cpu: 2}\n  nodeSelector: {any: thing}\n  nodeOverrides: [{node: a, warm: 1, wram: 2}]\nstatuss: {}\n",
        );
        assert_eq!(
            unknown("ExecutorPool", &d),
            [
                "metadata.nmae",
                "spec.limits.cpu",
                "spec.nodeOverrides[0].wram",
                "spec.wram",
                "statuss"
            ]
        );
    }

    #[test]
    fn every_field_of_the_samples_is_known() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/samples");
        let mut seen = 0;
        for entry in std::fs::read_dir(root).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for d in serde_yaml::Deserializer::from_str(&text) {
                let v = serde_json::to_value(
                    <serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap(),
                )
                .unwrap();
                let kind = v["kind"].as_str().unwrap_or_default().to_string();
                if matches!(kind.as_str(), "ExecutorPool" | "LanguageImage") {
                    seen += 1;
                    assert_eq!(unknown(&kind, &v), Vec::<String>::new(), "{v}");
                }
            }
        }
        assert!(seen >= 2);
    }

    #[test]
    fn image_languages_and_env_maps() {
        let d = doc(
            "kind: LanguageImage\nspec:\n  source: {recipe: small, tag: x}\n  languages:\n  - {name: py, sourceFile: m.py, run: x, env: {ANY_NAME: v}, smokeTests: []}\n",
        );
        let u = unknown("LanguageImage", &d);
        assert!(u.contains(&"spec.source.tag".to_string()), "{u:?}");
        assert!(!u.iter().any(|p| p.contains("ANY_NAME")), "{u:?}");
    }
}
