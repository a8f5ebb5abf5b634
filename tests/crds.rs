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
    use kube::CustomResourceExt;
    let crds = [
        serde_json::to_value(unsandbox::crd::LanguageImage::crd()).unwrap(),
        serde_json::to_value(unsandbox::crd::ExecutorPool::crd()).unwrap(),
    ];
    for crd in crds {
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
