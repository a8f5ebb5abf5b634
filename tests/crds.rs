//! The checked-in CRDs are exactly what the code generates, and their
//! schemas are structural (the API server rejects them otherwise).

use serde_json::Value;

const CHECKED_IN: &str = "crds/unsandbox.com.yaml";

#[test]
fn checked_in_crds_are_up_to_date() {
    let generated = unsandbox::crd::crds_yaml();
    let root = env!("CARGO_MANIFEST_DIR");
    for path in [CHECKED_IN, "charts/unsandbox/crds/unsandbox.com.yaml"] {
        let full = format!("{root}/{path}");
        let Ok(on_disk) = std::fs::read_to_string(&full) else {
            assert_ne!(path, CHECKED_IN, "{path} is missing");
            continue;
        };
        assert!(
            on_disk == generated,
            "{path} is out of date: regenerate it with `cargo run -q -- crds > {path}`"
        );
    }
}

/// Both CRDs as the code generates them, as JSON.
fn generated_crds() -> [Value; 2] {
    use kube::CustomResourceExt;
    [
        serde_json::to_value(unsandbox::crd::LanguageImage::crd()).unwrap(),
        serde_json::to_value(unsandbox::crd::ExecutorPool::crd()).unwrap(),
    ]
}

/// Walks a schema and lists every place that breaks the structural rules.
fn structural_problems(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else {
        return;
    };
    for banned in ["anyOf", "oneOf", "allOf", "$ref", "not"] {
        if obj.contains_key(banned) {
            out.push(format!("{path}: uses {banned}"));
        }
    }
    let special = obj.contains_key("x-kubernetes-int-or-string")
        || obj.contains_key("x-kubernetes-preserve-unknown-fields");
    if !obj.contains_key("type") && !special {
        out.push(format!("{path}: has no type"));
    }
    if obj.get("nullable") == Some(&Value::Bool(true)) && !obj.contains_key("type") {
        out.push(format!("{path}: nullable without a type"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            if v.get("description").is_none() && path.contains(".spec") {
                out.push(format!("{path}.{k}: has no description"));
            }
            structural_problems(v, &format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = obj.get("items") {
        structural_problems(items, &format!("{path}[]"), out);
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        structural_problems(extra, &format!("{path}{{}}"), out);
    }
}

#[test]
fn schemas_are_structural_and_every_spec_field_is_documented() {
    for crd in generated_crds() {
        let name = crd["metadata"]["name"].as_str().unwrap().to_string();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            let schema = &version["schema"]["openAPIV3Schema"];
            let mut problems = Vec::new();
            structural_problems(schema, &name, &mut problems);
            assert!(problems.is_empty(), "{name}: {problems:#?}");
            assert_eq!(
                version["subresources"]["status"],
                serde_json::json!({}),
                "{name} has a status subresource"
            );
            assert!(
                !version["additionalPrinterColumns"]
                    .as_array()
                    .unwrap()
                    .is_empty()
            );
        }
    }
}

#[test]
fn validation_rules_are_in_the_schema() {
    let yaml = unsandbox::crd::crds_yaml();
    for rule in [
        "self.default <= self.max",
        "has(self.alias) || has(self.fingerprint) || has(self.recipe)",
    ] {
        assert!(yaml.contains(rule), "missing CEL rule {rule}");
    }
    assert!(
        yaml.contains("- zerotrust\n") && yaml.contains("- semitrusted\n"),
        "network tier is an enum"
    );
}

/// Every place under a CEL rule that makes the API server's cost estimate
/// unbounded: a string without `maxLength`, an array without `maxItems` or
/// a map without `maxProperties`, in the rule's own subtree or (for arrays
/// and maps) above it. The API server rejects such a CRD when the estimate
/// exceeds its budget; bounding every one keeps each rule's cost fixed.
fn unbounded_under_rules(
    schema: &Value,
    path: &str,
    outer_unbounded: Option<&str>,
    out: &mut Vec<String>,
) {
    let Some(obj) = schema.as_object() else {
        return;
    };
    let has_rules = obj
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty());
    if has_rules {
        if let Some(outer) = outer_unbounded {
            out.push(format!("{path}: has a CEL rule below {outer}"));
        }
        let mut inner = Vec::new();
        unbounded_nodes(schema, path, &mut inner);
        out.extend(
            inner
                .into_iter()
                .map(|p| format!("{path}: its rule reads {p}")),
        );
    }
    let own = unbounded_here(obj).map(|_| path.to_string());
    let outer = outer_unbounded.map(String::from).or(own);
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            unbounded_under_rules(v, &format!("{path}.{k}"), outer.as_deref(), out);
        }
    }
    if let Some(items) = obj.get("items") {
        unbounded_under_rules(items, &format!("{path}[]"), outer.as_deref(), out);
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        unbounded_under_rules(extra, &format!("{path}{{}}"), outer.as_deref(), out);
    }
}

/// What is unbounded at this schema node itself, if anything.
fn unbounded_here(obj: &serde_json::Map<String, Value>) -> Option<&'static str> {
    let is_map = obj
        .get("additionalProperties")
        .is_some_and(Value::is_object);
    match obj.get("type").and_then(Value::as_str) {
        Some("string") if !obj.contains_key("maxLength") && !obj.contains_key("enum") => {
            Some("a string without maxLength")
        }
        Some("array") if !obj.contains_key("maxItems") => Some("an array without maxItems"),
        Some("object") if is_map && !obj.contains_key("maxProperties") => {
            Some("a map without maxProperties")
        }
        _ => None,
    }
}

fn unbounded_nodes(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else {
        return;
    };
    if let Some(what) = unbounded_here(obj) {
        out.push(format!("{path} ({what})"));
    }
    for (key, suffix) in [("items", "[]"), ("additionalProperties", "{}")] {
        if let Some(v) = obj.get(key).filter(|v| v.is_object()) {
            unbounded_nodes(v, &format!("{path}{suffix}"), out);
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            unbounded_nodes(v, &format!("{path}.{k}"), out);
        }
    }
}

#[test]
fn every_cel_rule_reads_only_bounded_strings_arrays_and_maps() {
    for crd in generated_crds() {
        let name = crd["metadata"]["name"].as_str().unwrap().to_string();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            let mut problems = Vec::new();
            unbounded_under_rules(
                &version["schema"]["openAPIV3Schema"],
                &name,
                None,
                &mut problems,
            );
            assert!(
                problems.is_empty(),
                "{name}: CEL cost is unbounded (add maxLength/maxItems/maxProperties, or use pattern/enum instead of a rule): {problems:#?}"
            );
        }
    }
}

/// The guard itself catches the defect a real API server rejected: a
/// `matches()` rule on a string without `maxLength`, inside an array without
/// `maxItems`.
#[test]
fn the_cel_guard_catches_an_unbounded_rule() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"languages": {"type": "array", "items": {
            "type": "object",
            "properties": {"name": {
                "type": "string",
                "x-kubernetes-validations": [{"rule": "self.matches('^[a-z]+$')"}]
            }}
        }}}
    });
    let mut problems = Vec::new();
    unbounded_under_rules(&schema, "li", None, &mut problems);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].contains("below li.languages"), "{problems:#?}");
    assert!(problems[1].contains("li.languages[].name (a string without maxLength)"));
}
