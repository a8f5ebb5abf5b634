//! Schemas of the resource types the API shows (a pool's spec and node
//! status, conditions, network tiers). They derive `schemars::JsonSchema`
//! for the CRDs, so the contract takes the very schema schemars gives them:
//! utoipa refers to each by its schemars name and holds a placeholder,
//! which `splice` replaces with the schemars definitions (and the types
//! they refer to).

use std::borrow::Cow;

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{RefOr, extensions::ExtensionsBuilder};
use utoipa::{PartialSchema, ToSchema};

use crate::crd::condition::Condition;
use crate::crd::{ExecutorPoolSpec, NetworkTier, NodePoolStatus, Reason};

/// Marks a placeholder; `splice` must replace every one.
const PLACEHOLDER: &str = "x-unsandbox-schemars";

/// `Condition` of the Kubernetes API, as a field's `value_type`: the type
/// itself is foreign to this crate, so it cannot carry utoipa's traits.
pub struct KubeCondition;

/// Declares types whose schema is their schemars schema: utoipa's traits
/// for each, and `definitions` with all of them.
macro_rules! from_schemars {
    ($($contract:ty => $rust:ty),* $(,)?) => {
        $(
            impl PartialSchema for $contract {
                fn schema() -> RefOr<Schema> {
                    placeholder(&<$rust as JsonSchema>::schema_name())
                }
            }

            impl ToSchema for $contract {
                fn name() -> Cow<'static, str> {
                    <$rust as JsonSchema>::schema_name()
                }
            }
        )*

        /// The schemars definitions of every such type and of the types
        /// they refer to, keyed by schema name, with references into
        /// `#/components/schemas`. Schemas of responses: a field is
        /// required when it is always serialized.
        fn definitions() -> Map<String, Value> {
            let mut generator = SchemaSettings::draft2020_12()
                .with(|s| {
                    s.definitions_path = "/components/schemas".into();
                    s.meta_schema = None;
                })
                .for_serialize()
                .into_generator();
            let mut inlined = Map::new();
            $(
                let schema = generator.subschema_for::<$rust>();
                if schema.get("$ref").is_none() {
                    inlined.insert(
                        <$rust as JsonSchema>::schema_name().into_owned(),
                        schema.to_value(),
                    );
                }
            )*
            let mut all = generator.take_definitions(true);
            all.extend(inlined);
            all
        }
    };
}

from_schemars! {
    NetworkTier => NetworkTier,
    ExecutorPoolSpec => ExecutorPoolSpec,
    NodePoolStatus => NodePoolStatus,
    KubeCondition => Condition,
}

fn placeholder(name: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .extensions(Some(
            ExtensionsBuilder::new()
                .add(PLACEHOLDER, Value::String(name.to_string()))
                .build(),
        ))
        .into()
}

/// A condition's reason: one word of a closed list.
impl PartialSchema for Reason {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .description(Some(
                "Why a condition has its status: one CamelCase word a program can match on.",
            ))
            .enum_values(Some(Reason::ALL.iter().map(|r| r.as_str())))
            .into()
    }
}

impl ToSchema for Reason {}

/// Puts the schemars definitions into the contract's components in place
/// of their placeholders. A definition whose name utoipa already uses for
/// another schema would be a different type under one name: that panics,
/// and the contract's tests build the contract.
pub fn splice(doc: &mut Value) {
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .expect("the contract has component schemas");
    for (name, schema) in definitions() {
        match schemas.get(&name) {
            Some(existing) if existing.get(PLACEHOLDER).is_none() => {
                panic!("two schemas are named {name}: one from utoipa, one from schemars")
            }
            _ => {
                schemas.insert(name, schema);
            }
        }
    }
    let left: Vec<&String> = schemas
        .iter()
        .filter(|(_, s)| s.get(PLACEHOLDER).is_some())
        .map(|(name, _)| name)
        .collect();
    assert!(left.is_empty(), "schemas without a definition: {left:?}");
}
