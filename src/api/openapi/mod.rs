//! The API's contract, OpenAPI 3.1, generated from the handlers'
//! `#[utoipa::path]` annotations and the bodies' types, and served at
//! `GET /openapi.json`. The router and the contract are built from one list
//! of routes (`api::routes`), so no route is served undocumented.
//!
//! What utoipa cannot see is added here: the resource types' schemars
//! schemas (`kube`), serde's field aliases, and bearer security on every
//! operation outside `auth::OPEN` when this server requires tokens.

mod kube;
mod responses;

use axum::Extension;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::api::piston::PistonErrorBody;
use crate::http_error::ErrorBody;

pub use kube::KubeCondition;
pub use responses::{AuthErrors, ExecutionErrors, JobErrors, PistonErrors};

/// The contract's fixed parts; the routes add their paths and schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "unsandbox",
        description = "Run untrusted code in single-use LXD containers: a native API and a Piston-compatible one."
    ),
    tags(
        (name = "native", description = "The native execution API"),
        (name = "jobs", description = "Executions that answer at once and finish later"),
        (name = "piston", description = "Piston's v2 API (engineer-man/piston)"),
        (name = "info", description = "What this host serves, its health and its contract"),
        (name = "auth", description = "The caller's token and quota"),
    ),
    components(schemas(ErrorBody, PistonErrorBody))
)]
struct Base;

/// The contract before the routes are added.
pub fn base() -> utoipa::openapi::OpenApi {
    Base::openapi()
}

/// The security scheme of client tokens (`Authorization: Bearer TOKEN`).
pub const BEARER: &str = "bearer";

/// Request fields serde accepts under a second name as well, which utoipa
/// does not see: (schema, field, alias).
const ALIASES: &[(&str, &str, &str)] = &[("ExecuteRequest", "network", "network_mode")];

/// This server's contract from what the routes documented: resource
/// schemas spliced in, aliases listed, and bearer security on every
/// operation outside `auth::OPEN` when `tokens_required`.
pub fn contract(api: utoipa::openapi::OpenApi, tokens_required: bool) -> Value {
    let mut doc = serde_json::to_value(&api).expect("an OpenAPI document serializes");
    kube::splice(&mut doc);
    add_aliases(&mut doc);
    add_job_request(&mut doc);
    doc["components"]["securitySchemes"] = json!({
        BEARER: {"type": "http", "scheme": "bearer", "description": "A client token (see the tokens file)"}
    });
    if tokens_required {
        require_tokens(&mut doc);
    }
    doc
}

/// Lists each alias beside its field, with the same schema, and says that
/// a body may name only one of the two.
fn add_aliases(doc: &mut Value) {
    for (schema, field, alias) in ALIASES {
        let object = &mut doc["components"]["schemas"][schema];
        let mut property = object["properties"][field].clone();
        assert!(!property.is_null(), "{schema} has no field {field}");
        property["description"] = json!(format!("Another name of `{field}`."));
        object["properties"][alias] = property;
        object["not"] = json!({"required": [field, alias]});
    }
}

/// A job's body is a `/run` body and `callback_url`, read as strictly as
/// `/run`'s (see `jobs::job_request`): its schema is `ExecuteRequest`'s with
/// that one property more, which utoipa's `allOf` for a flattened struct
/// cannot say (`ExecuteRequest` allows no other property).
fn add_job_request(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    let generated = schemas["JobRequest"].clone();
    let callback = generated["allOf"]
        .as_array()
        .and_then(|parts| {
            parts
                .iter()
                .find_map(|p| p["properties"].get("callback_url"))
        })
        .cloned()
        .expect("JobRequest documents callback_url");
    let mut schema = schemas["ExecuteRequest"].clone();
    schema["properties"]["callback_url"] = callback;
    schema
        .as_object_mut()
        .expect("a schema is an object")
        .remove("examples");
    schemas["JobRequest"] = schema;
}

/// The keys of a path item that are operations.
pub const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Bearer security on every operation of a path that needs a token.
fn require_tokens(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths {
        if crate::auth::OPEN.contains(&path.as_str()) {
            continue;
        }
        for method in METHODS {
            if let Some(operation) = item.get_mut(method) {
                operation["security"] = json!([{ BEARER: [] }]);
            }
        }
    }
}

/// The served contract, serialized once.
#[derive(Clone)]
pub struct Served(pub Bytes);

impl Served {
    pub fn new(doc: &Value) -> Self {
        Self(Bytes::from(
            serde_json::to_vec(doc).expect("JSON serializes"),
        ))
    }
}

/// `GET /openapi.json`: this server's contract.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "info",
    responses((status = 200, description = "This API's contract, OpenAPI 3.1", body = serde_json::Value))
)]
pub async fn openapi_json(Extension(served): Extension<Served>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], served.0)
}

#[cfg(test)]
pub(crate) mod conformance;
#[cfg(test)]
mod tests;
