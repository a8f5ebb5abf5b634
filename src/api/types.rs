//! Request and response bodies of the native execution API.

use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::crd::NetworkTier;
use crate::egress::NetworkRecord;

/// `POST /execute/{language}` and `POST /run`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(
    json!({"code": "import sys\nprint(input(), sys.argv[1:])", "stdin": "hi", "args": ["a b"], "language": "python"})
))]
pub struct ExecuteRequest {
    /// Source code of the program.
    pub code: String,
    /// Language name or alias (`/run` only; detected when absent).
    #[serde(default)]
    pub language: Option<String>,
    /// The source's file name, a hint for `/run` when `language` is absent:
    /// its extension names the language when one served language claims
    /// it (a shebang still wins). The source is still written to the
    /// language's own file name.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "file_name"
    )]
    #[schema(max_length = 255)]
    pub file_name: Option<String>,
    /// Standard input.
    #[serde(default)]
    pub stdin: String,
    /// Arguments passed to the program.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra files written beside the source.
    #[serde(default, deserialize_with = "objects")]
    pub files: Vec<InputFile>,
    /// Wall-clock limit of the run stage in milliseconds; at most the pool's maximum.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Wall-clock limit of the compile stage in milliseconds; at most the pool's maximum.
    #[serde(default)]
    pub compile_timeout_ms: Option<u64>,
    /// Memory limit of the run stage in MiB; at most the pool's `limits.memoryMib`.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Memory limit of the compile stage in MiB; at most the pool's compile memory.
    #[serde(default)]
    pub compile_memory_mib: Option<u64>,
    /// Bytes kept of stdout and of stderr; at most the pool's maximum.
    #[serde(default)]
    pub max_output_bytes: Option<u64>,
    /// Network tier; `zerotrust` when absent.
    #[serde(
        default,
        alias = "network_mode",
        skip_serializing_if = "Option::is_none"
    )]
    pub network: Option<NetworkTier>,
    /// How `stdout` and `stderr` come back: `utf8` (default; invalid
    /// sequences become U+FFFD) or `base64` (the exact bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_encoding: Option<OutputEncoding>,
}

/// A body that must be a JSON object. serde's derive also builds a struct
/// from an array of its fields in order (`["print(1)"]`), which the
/// contract does not allow.
#[derive(Debug, Clone, PartialEq)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer.deserialize_map(Only(PhantomData)).map(Object)
    }
}

/// Most bytes of `file_name`, as the contract says.
const FILE_NAME_MAX: usize = 255;

/// `file_name`: a string of at most `FILE_NAME_MAX` bytes, or null.
fn file_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let name = Option::<String>::deserialize(deserializer)?;
    match name {
        Some(n) if n.len() > FILE_NAME_MAX => Err(serde::de::Error::custom(format!(
            "file_name is {} bytes long; the limit is {FILE_NAME_MAX}",
            n.len()
        ))),
        name => Ok(name),
    }
}

/// A list of objects (see `Object`).
pub(super) fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let list: Vec<Object<T>> = Vec::deserialize(deserializer)?;
    Ok(list.into_iter().map(|Object(t)| t).collect())
}

/// How the program's output is returned.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputEncoding {
    /// Text: bytes that are not UTF-8 are replaced by U+FFFD.
    #[default]
    Utf8,
    /// The exact bytes, base64-encoded (standard alphabet, padded).
    Base64,
}

impl OutputEncoding {
    /// `bytes` as this encoding returns them.
    pub fn encode(self, bytes: &[u8]) -> String {
        use base64::Engine;
        match self {
            OutputEncoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            OutputEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }
}

/// An extra file.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputFile {
    /// Plain file name (no directories).
    pub name: String,
    pub content: String,
    /// `utf8` (default) or `base64`.
    #[serde(default)]
    pub encoding: Option<String>,
}

/// Timings of one execution, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Timings {
    /// Waiting for a warm container.
    pub queue_ms: u64,
    /// Running the code: all stages.
    pub exec_ms: u64,
    /// The compile stage (compiled languages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_ms: Option<u64>,
    /// The run stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_ms: Option<u64>,
    /// CPU time of all stages, measured from the container's cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    /// Peak memory of the container over the stages, in bytes, from its cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// From the request's arrival to the answer.
    pub total_ms: u64,
}

/// How `/run` chose the language.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct DetectionReport {
    /// `request`, `shebang`, `extension` (the file name's), `syntax`
    /// (syntax only that language has) or `content` (the model).
    pub method: String,
    /// 0 to 1: 1 for `request`, `shebang` and a single claimant
    /// `extension`; the model's calibrated probability for `content`.
    pub confidence: f64,
    /// Other languages considered, with their confidence.
    pub alternatives: Vec<(String, f64)>,
}

/// The compile stage of an execution.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct CompileReport {
    /// `ok`, `runtime_error` (the compiler failed), `timeout`, `killed`,
    /// `memory_limit_exceeded`, `process_limit_exceeded` or
    /// `output_limit_exceeded`.
    pub status: String,
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// CPU time of the compile stage, from the container's cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    /// Peak memory of the container during the compile stage, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// The result of an execution. `stdout`, `stderr`, `exit_code` and `signal`
/// are the run stage's, or the compile stage's when compiling failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ExecuteResponse {
    /// `ok`, `compile_error`, `runtime_error`, `timeout`, `killed`,
    /// `memory_limit_exceeded`, `process_limit_exceeded`,
    /// `output_limit_exceeded` or `internal_error`.
    pub status: String,
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub language: String,
    pub pool: String,
    pub host: String,
    pub container: String,
    pub network: NetworkReport,
    pub timings: Timings,
    /// The compile stage, for compiled languages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile: Option<CompileReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected: Option<DetectionReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `base64` when `stdout` and `stderr` (the compile stage's too) are
    /// base64 as the request asked; absent for text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_encoding: Option<OutputEncoding>,
}

/// The execution's network: its tier, and what its connections through
/// the egress proxy reached, what was refused and why, and which budget
/// ran out (`reached`, `denied`, `budget_exceeded`; empty for
/// `zerotrust`, which has no network).
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct NetworkReport {
    pub tier: NetworkTier,
    #[serde(flatten)]
    pub egress: NetworkRecord,
}

/// Also reads the bare tier (`"network": "zerotrust"`) that agents before
/// the `semitrusted` tier answer with, so a forwarded answer from an older
/// peer still parses during a rolling upgrade.
impl<'de> Deserialize<'de> for NetworkReport {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Tier(NetworkTier),
            Report {
                tier: NetworkTier,
                #[serde(flatten)]
                egress: NetworkRecord,
            },
        }
        Ok(match Wire::deserialize(d)? {
            Wire::Tier(tier) => NetworkReport {
                tier,
                egress: NetworkRecord::default(),
            },
            Wire::Report { tier, egress } => NetworkReport { tier, egress },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_reports_read_both_shapes_and_write_the_object() {
        let old: NetworkReport = serde_json::from_str(r#""zerotrust""#).unwrap();
        assert_eq!(old.tier, NetworkTier::Zerotrust);
        assert_eq!(old.egress, NetworkRecord::default());
        let zero: NetworkReport = serde_json::from_str(r#"{"tier": "zerotrust"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&zero).unwrap(),
            r#"{"tier":"zerotrust","reached":[],"denied":[],"budget_exceeded":null}"#
        );
        let semi = r#"{"tier":"semitrusted","reached":[{"host":"a.org","port":443,"connections":1,"bytes_sent":5,"bytes_received":7}],"denied":[],"budget_exceeded":null}"#;
        let report: NetworkReport = serde_json::from_str(semi).unwrap();
        assert_eq!(report.egress.reached[0].host, "a.org");
        assert_eq!(serde_json::to_string(&report).unwrap(), semi);
    }

    #[test]
    fn output_is_text_or_exact_base64() {
        let bytes = b"ok\xff\x00";
        assert_eq!(OutputEncoding::Utf8.encode(bytes), "ok\u{fffd}\u{0}");
        assert_eq!(OutputEncoding::Base64.encode(bytes), "b2v/AA==");
        let req: ExecuteRequest =
            serde_json::from_str(r#"{"code": "x", "output_encoding": "base64"}"#).unwrap();
        assert_eq!(req.output_encoding, Some(OutputEncoding::Base64));
        assert!(
            serde_json::from_str::<ExecuteRequest>(r#"{"code": "x", "output_encoding": "hex"}"#)
                .is_err()
        );
    }

    #[test]
    fn bodies_and_files_are_objects_not_arrays_of_fields() {
        let read = |s: &str| serde_json::from_str::<Object<ExecuteRequest>>(s).map(|o| o.0);
        let req = read(r#"{"code": "x", "files": [{"name": "a", "content": "b"}]}"#).unwrap();
        assert_eq!(req.files[0].content, "b");
        assert!(
            serde_json::from_str::<ExecuteRequest>(r#"["x"]"#).is_ok(),
            "serde's derive"
        );
        let err = read(r#"["x"]"#).unwrap_err().to_string();
        assert!(err.contains("expected a JSON object"), "{err}");
        let err = read(r#"{"code": "x", "files": [["a", "b"]]}"#).unwrap_err();
        assert!(err.to_string().contains("expected a JSON object"), "{err}");
    }
}
