//! Test helpers: whether a JSON value is what the contract says a schema
//! allows, and which field names serde accepts for a type.

use std::sync::LazyLock;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::{Value, json};

/// The contract of a server that requires tokens.
pub static CONTRACT: LazyLock<Value> = LazyLock::new(|| contract(true));

/// The contract of a server that requires tokens or not, as
/// `GET /openapi.json` serves it.
pub fn contract(tokens_required: bool) -> Value {
    super::contract(crate::api::routes().split_for_parts().1, tokens_required)
}

/// A validator for the component schema `name`, resolving references
/// within the contract.
pub fn validator(name: &str) -> jsonschema::Validator {
    assert!(
        CONTRACT["components"]["schemas"].get(name).is_some(),
        "no schema {name}"
    );
    let schema = json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": CONTRACT["components"],
    });
    jsonschema::draft202012::new(&schema).expect("the schema compiles")
}

/// Panics unless `value` is valid for the component schema `name`.
pub fn assert_conforms(name: &str, value: &Value) {
    let v = validator(name);
    let errors: Vec<String> = v.iter_errors(value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{value} is not a {name}: {errors:?}");
}

/// The field names (with aliases) serde's derive accepts for `T`.
pub fn accepted_fields<T: DeserializeOwned>() -> Vec<&'static str> {
    match T::deserialize(FieldNames) {
        Err(Captured(fields)) => fields,
        Ok(_) => unreachable!("FieldNames never yields a value"),
    }
}

/// A deserializer that yields nothing, and records the field list a
/// struct's `Deserialize` hands to `deserialize_struct`.
struct FieldNames;

#[derive(Debug)]
struct Captured(Vec<&'static str>);

impl std::fmt::Display for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fields {:?}", self.0)
    }
}

impl std::error::Error for Captured {}

impl de::Error for Captured {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Captured(Vec::new())
    }
}

impl<'de> Deserializer<'de> for FieldNames {
    type Error = Captured;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Captured> {
        Err(Captured(Vec::new()))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Captured> {
        Err(Captured(fields.to_vec()))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}
