//! Piston request bodies: checked field by field in Piston's order with its
//! messages, then turned into an execution request, which the execution
//! service checks against the chosen pool like any other. Pure.

use base64::Engine;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa::openapi::schema::{
    AnyOfBuilder, ArrayBuilder, Object, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};

use crate::crd::NetworkTier;
use crate::service::{self, Asked as Limits, Memory};

use super::PistonError;

/// A file of a request, not yet decoded.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RawFile {
    pub(super) name: Option<String>,
    pub(super) content: String,
    pub(super) encoding: Encoding,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Encoding {
    Utf8,
    Base64,
    Hex,
}

/// Limits a request asked for; `None` where it named none.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Asked {
    pub(super) compile_timeout: Option<u64>,
    pub(super) run_timeout: Option<u64>,
    pub(super) compile_cpu_time: Option<u64>,
    pub(super) run_cpu_time: Option<u64>,
    /// Bytes; -1 (no extra limit) reads as `None`.
    pub(super) compile_memory_limit: Option<u64>,
    pub(super) run_memory_limit: Option<u64>,
}

/// A structurally valid request.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Request {
    pub(super) language: String,
    /// `*` when the request named none.
    pub(super) version: String,
    pub(super) files: Vec<RawFile>,
    pub(super) stdin: String,
    pub(super) args: Vec<String>,
    pub(super) asked: Asked,
}

/// The body of `POST /api/v2/execute` as the contract gives it. `parse`
/// reads the JSON itself, field by field in Piston's order and with
/// Piston's messages, and ignores other fields as Piston does; this type
/// is never built, it describes, and a test holds it to `parse`.
#[derive(ToSchema)]
#[schema(
    as = PistonExecuteRequest,
    examples(json!({"language": "py", "version": "3.x", "files": [{"content": "print(input()[::-1])"}], "stdin": "olleh"}))
)]
#[allow(dead_code)]
pub(super) struct Contract {
    /// Language name or alias.
    #[schema(min_length = 1)]
    language: String,
    /// A semver selector (`3.11.2`, `3.x`, `^3.9`); null, empty or absent
    /// for any version.
    version: Option<String>,
    /// The source (the first utf8 file, whatever its name) and the files
    /// written beside it.
    files: Vec<ContractFile>,
    stdin: Option<String>,
    /// Arguments; numbers are taken as their decimal text.
    #[schema(schema_with = args)]
    args: Option<Vec<String>>,
    /// Milliseconds.
    #[schema(schema_with = limit)]
    compile_timeout: Option<u64>,
    /// Milliseconds.
    #[schema(schema_with = limit)]
    run_timeout: Option<u64>,
    /// Milliseconds of CPU time, measured: a stage that used more is `TO`.
    #[schema(schema_with = limit)]
    compile_cpu_time: Option<u64>,
    /// Milliseconds of CPU time, measured: a stage that used more is `TO`.
    #[schema(schema_with = limit)]
    run_cpu_time: Option<u64>,
    /// Bytes; -1 for the pool's limit.
    #[schema(schema_with = memory_limit)]
    compile_memory_limit: Option<u64>,
    /// Bytes; -1 for the pool's limit.
    #[schema(schema_with = memory_limit)]
    run_memory_limit: Option<u64>,
}

/// A file of a Piston request.
#[derive(ToSchema)]
#[schema(as = PistonFile)]
#[allow(dead_code)]
pub(super) struct ContractFile {
    /// A plain name; null or empty: `file{i}.code`.
    name: Option<String>,
    content: String,
    /// `base64` or `hex`; anything else reads as `utf8`.
    encoding: Option<serde_json::Value>,
}

/// `args`: strings or numbers, or null.
fn args() -> Schema {
    let arg = OneOfBuilder::new()
        .item(Object::with_type(Type::String))
        .item(Object::with_type(Type::Number));
    let list = ArrayBuilder::new().items(arg);
    OneOfBuilder::new()
        .item(list)
        .item(Object::with_type(Type::Null))
        .into()
}

/// A limit as Piston takes it: a number of at least 0 (0 is the pool's),
/// or null, `false` or `""` for the pool's.
fn limit() -> Schema {
    none_or(
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .minimum(Some(0.0))
            .into(),
    )
}

/// A memory limit: as `limit`, and -1 for the pool's too.
fn memory_limit() -> Schema {
    let number = AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(0.0)),
        )
        .item(one_of_values([json!(-1)]))
        .into();
    none_or(number)
}

fn none_or(value: Schema) -> Schema {
    AnyOfBuilder::new()
        .item(value)
        .item(Object::with_type(Type::Null))
        .item(one_of_values([json!(false), json!("")]))
        .into()
}

/// Exactly these values, whatever their type.
fn one_of_values<const N: usize>(values: [Value; N]) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .enum_values(Some(values))
}

/// Checks a request body's fields in Piston's order, with Piston's messages.
pub(super) fn parse(body: &Value) -> Result<Request, PistonError> {
    let empty = Map::new();
    let obj = body.as_object().unwrap_or(&empty);
    let language = match obj.get("language") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(PistonError::bad("language is required as a string")),
    };
    let version = match obj.get("version") {
        None | Some(Value::Null) => "*".to_string(),
        Some(Value::String(s)) if s.is_empty() => "*".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(PistonError::bad("version is required as a string")),
    };
    let Some(Value::Array(list)) = obj.get("files") else {
        return Err(PistonError::bad("files is required as an array"));
    };
    let mut files = Vec::with_capacity(list.len());
    for (i, f) in list.iter().enumerate() {
        let Some(Value::String(content)) = f.get("content") else {
            return Err(PistonError::bad(format!(
                "files[{i}].content is required as a string"
            )));
        };
        let name = match f.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(PistonError::bad(format!(
                    "files[{i}].name must be a string"
                )));
            }
        };
        // Piston reads any other encoding as utf8.
        let encoding = match f.get("encoding").and_then(Value::as_str) {
            Some("base64") => Encoding::Base64,
            Some("hex") => Encoding::Hex,
            _ => Encoding::Utf8,
        };
        files.push(RawFile {
            name,
            content: content.clone(),
            encoding,
        });
    }
    let stdin = match obj.get("stdin") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(PistonError::bad("stdin must be a string")),
    };
    let args = match obj.get("args") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(PistonError::bad("args must be an array of strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(PistonError::bad("args must be an array of strings")),
    };
    let n = |name: &str| constraint(obj, name);
    let asked = Asked {
        compile_memory_limit: n("compile_memory_limit")?,
        run_memory_limit: n("run_memory_limit")?,
        compile_timeout: n("compile_timeout")?,
        run_timeout: n("run_timeout")?,
        compile_cpu_time: n("compile_cpu_time")?,
        run_cpu_time: n("run_cpu_time")?,
    };
    Ok(Request {
        language,
        version,
        files,
        stdin,
        args,
        asked,
    })
}

/// A numeric limit: Piston skips falsy values (absent, null, 0), wants a
/// number otherwise, and refuses negatives; -1 is the memory limits' "no
/// limit" and reads as absent.
pub(super) fn constraint(obj: &Map<String, Value>, name: &str) -> Result<Option<u64>, PistonError> {
    let v = match obj.get(name) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(_) => {
            return Err(PistonError::bad(format!(
                "If specified, {name} must be a number"
            )));
        }
    };
    if v == 0.0 || (v == -1.0 && name.ends_with("memory_limit")) {
        return Ok(None);
    }
    if v < 0.0 {
        return Err(PistonError::bad(format!("{name} must be non-negative")));
    }
    Ok(Some(v as u64))
}

/// The source (first utf8 file) and the other files, named (`file{i}.code`
/// when unnamed) and decoded, each with its place in the request.
pub(super) fn split_files(files: &[RawFile]) -> Result<(String, Vec<service::File>), PistonError> {
    let src = files
        .iter()
        .position(|f| f.encoding == Encoding::Utf8)
        .ok_or_else(|| PistonError::bad("files must include at least one utf8 encoded file"))?;
    let others = files
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != src)
        .map(|(index, f)| service::File {
            index,
            name: f
                .name
                .clone()
                .unwrap_or_else(|| format!("file{index}.code")),
            content: decode(&f.content, f.encoding).map_err(|e| format!("content: {e}")),
        })
        .collect();
    Ok((files[src].content.clone(), others))
}

pub(super) fn decode(content: &str, encoding: Encoding) -> Result<Vec<u8>, String> {
    match encoding {
        Encoding::Utf8 => Ok(content.as_bytes().to_vec()),
        Encoding::Base64 => {
            let lenient = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            let clean: String = content.chars().filter(|c| !c.is_whitespace()).collect();
            lenient
                .decode(clean)
                .map_err(|e| format!("not valid base64: {e}"))
        }
        Encoding::Hex => {
            let s = content.trim().as_bytes();
            if !s.len().is_multiple_of(2) {
                return Err("not valid hex: odd length".into());
            }
            s.chunks(2)
                .map(|p| {
                    std::str::from_utf8(p)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                })
                .collect::<Option<_>>()
                .ok_or_else(|| "not valid hex".into())
        }
    }
}

/// The execution request for a Piston request, with `caps` from the
/// caller's quota. Piston's memory limits are bytes; Piston ends stdin with
/// a newline when it has none.
pub(super) fn submission(
    req: &Request,
    caps: crate::auth::Quota,
) -> Result<service::Request, PistonError> {
    let (code, files) = split_files(&req.files)?;
    let a = &req.asked;
    let mut stdin = req.stdin.clone();
    if !stdin.ends_with('\n') {
        stdin.push('\n');
    }
    Ok(service::Request {
        language: req.language.clone(),
        tier: NetworkTier::Zerotrust,
        code,
        files,
        stdin: stdin.into_bytes(),
        args: req.args.clone(),
        asked: Limits {
            run_timeout_ms: a.run_timeout,
            compile_timeout_ms: a.compile_timeout,
            run_cpu_ms: a.run_cpu_time,
            compile_cpu_ms: a.compile_cpu_time,
            output_bytes: None,
            run_memory: a.run_memory_limit.map(Memory::Bytes),
            compile_memory: a.compile_memory_limit.map(Memory::Bytes),
        },
        caps,
    })
}
