use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::conformance::{CONTRACT, accepted_fields, assert_conforms, contract, validator};
use super::{BEARER, METHODS};
use crate::agent::{Blocker, ChoiceError};
use crate::api::error::ApiError;
use crate::api::types::{
    CompileReport, DetectionReport, ExecuteRequest, ExecuteResponse, InputFile, NetworkReport,
    Object, OutputEncoding, Timings,
};
use crate::crd::NetworkTier;
use crate::service::{ExecError, Invalid, Limit, Unit};

/// Every `$ref` in `v`, with where it is.
fn refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if let ("$ref", Value::String(r)) = (k.as_str(), child) {
                    out.push((at.to_string(), r.clone()));
                }
                refs(child, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                refs(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_reference_resolves_within_the_contract() {
    let mut found = Vec::new();
    refs(&CONTRACT, "", &mut found);
    assert!(found.len() > 50, "{}", found.len());
    for (at, r) in found {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: {r} is not local"));
        let pointer = pointer.replace("~1", "/").replace("~0", "~");
        assert!(
            CONTRACT.pointer(&pointer).is_some(),
            "{at}: {r} resolves to nothing"
        );
    }
}

#[test]
fn every_schema_compiles() {
    for name in CONTRACT["components"]["schemas"]
        .as_object()
        .unwrap()
        .keys()
    {
        validator(name);
    }
}

/// Property names of a component schema.
fn properties(schema: &str) -> BTreeSet<String> {
    CONTRACT["components"]["schemas"][schema]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{schema} has no properties"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn request_bodies_list_exactly_the_fields_serde_accepts() {
    let cases = [
        ("ExecuteRequest", accepted_fields::<ExecuteRequest>()),
        ("InputFile", accepted_fields::<InputFile>()),
    ];
    for (schema, accepted) in cases {
        let accepted: BTreeSet<String> = accepted.into_iter().map(String::from).collect();
        assert!(accepted.contains("code") || accepted.contains("content"));
        assert_eq!(properties(schema), accepted, "{schema}");
        assert_eq!(
            CONTRACT["components"]["schemas"][schema]["additionalProperties"], false,
            "{schema} refuses unknown fields"
        );
    }
}

#[test]
fn native_bodies_valid_by_the_contract_are_those_serde_takes() {
    let cases = [
        json!({"code": "x"}),
        json!({}),
        json!({"code": 1}),
        json!({"code": "x", "stdin": null}),
        json!({"code": "x", "language": null, "timeout_ms": null}),
        json!({"code": "x", "timeout_ms": -1}),
        json!({"code": "x", "timeout_ms": 2.5}),
        json!({"code": "x", "memory_mib": 64, "max_output_bytes": 0}),
        json!({"code": "x", "network": "semitrusted"}),
        json!({"code": "x", "network_mode": "zerotrust"}),
        json!({"code": "x", "network": "zerotrust", "network_mode": "zerotrust"}),
        json!({"code": "x", "network": "open"}),
        json!({"code": "x", "output_encoding": "base64"}),
        json!({"code": "x", "output_encoding": "hex"}),
        json!({"code": "x", "args": ["a", "b"]}),
        json!({"code": "x", "args": [1]}),
        json!({"code": "x", "files": [{"name": "a", "content": "b"}]}),
        json!({"code": "x", "files": [{"name": "a", "content": "b", "encoding": null}]}),
        json!({"code": "x", "files": [{"content": "b"}]}),
        json!({"code": "x", "files": [{"name": "a", "content": "b", "mode": 7}]}),
        json!({"code": "x", "cpu": 1}),
        json!({"code": "x", "files": [["a", "b"]]}),
        json!(["code"]),
    ];
    let v = validator("ExecuteRequest");
    for body in cases {
        let serde = serde_json::from_value::<Object<ExecuteRequest>>(body.clone());
        assert_eq!(
            v.is_valid(&body),
            serde.is_ok(),
            "{body}: serde says {:?}",
            serde.err()
        );
    }
}

#[test]
fn native_answers_conform() {
    let full = ExecuteResponse {
        status: "compile_error".into(),
        stdout: "".into(),
        stderr: "e".into(),
        exit_code: Some(1),
        signal: None,
        stdout_truncated: false,
        stderr_truncated: true,
        language: "c".into(),
        pool: "t/p".into(),
        host: "h".into(),
        container: "c".into(),
        network: NetworkReport {
            tier: NetworkTier::Semitrusted,
            egress: crate::egress::NetworkRecord {
                reached: vec![crate::egress::Reached {
                    host: "pypi.org".into(),
                    port: 443,
                    connections: 1,
                    bytes_sent: 10,
                    bytes_received: 20,
                }],
                reached_omitted: 0,
                denied: vec![crate::egress::Denied {
                    host: "evil.org".into(),
                    port: 443,
                    reason: "not in this pool's allowlist".into(),
                }],
                denied_omitted: 3,
                budget_exceeded: Some(crate::egress::BudgetKind::Bytes),
            },
        },
        timings: Timings {
            queue_ms: 0,
            exec_ms: 3,
            compile_ms: Some(3),
            run_ms: None,
            cpu_ms: Some(1),
            memory_bytes: Some(1 << 20),
            total_ms: 4,
        },
        compile: Some(CompileReport {
            status: "runtime_error".into(),
            stdout: "".into(),
            stderr: "ZQ==".into(),
            exit_code: Some(1),
            signal: None,
            stdout_truncated: false,
            stderr_truncated: false,
            message: Some("m".into()),
            cpu_ms: Some(1),
            memory_bytes: None,
        }),
        detected: Some(DetectionReport {
            method: "content".into(),
            confidence: 0.5,
            alternatives: vec![("lua".into(), 0.25)],
        }),
        message: Some("m".into()),
        output_encoding: Some(OutputEncoding::Base64),
    };
    let bare = ExecuteResponse {
        network: NetworkReport {
            tier: NetworkTier::Zerotrust,
            egress: Default::default(),
        },
        compile: None,
        detected: None,
        message: None,
        output_encoding: None,
        timings: Timings {
            compile_ms: None,
            run_ms: None,
            cpu_ms: None,
            memory_bytes: None,
            ..full.timings.clone()
        },
        ..full.clone()
    };
    for answer in [full, bare] {
        assert_conforms("ExecuteResponse", &serde_json::to_value(answer).unwrap());
    }
}

#[test]
fn error_answers_conform() {
    let blocked = |blocker| ChoiceError::Blocked {
        language: "python".into(),
        tier: NetworkTier::Semitrusted,
        blocker,
    };
    let errors: Vec<ApiError> = vec![
        ChoiceError::UnknownLanguage {
            language: "cobol".into(),
            available: vec!["python".into()],
        }
        .into(),
        ChoiceError::Ambiguous {
            language: "py".into(),
            meanings: vec!["python (t/a)".into()],
        }
        .into(),
        blocked(Blocker::TierUnavailable {
            offered: vec![NetworkTier::Zerotrust],
        })
        .into(),
        blocked(Blocker::Starting).into(),
        ExecError::Undetected {
            available: vec!["bash".into()],
        }
        .into(),
        ExecError::Uncertain {
            candidates: vec![("bash".into(), 0.3)],
        }
        .into(),
        ExecError::from(Invalid::AboveMaximum {
            limit: Limit::RunMemory,
            asked: 9,
            maximum: 8,
            unit: Unit::Mib,
        })
        .into(),
        crate::api::oversize::refusal(11, 10),
    ];
    for e in errors {
        let body = serde_json::to_value(e.body()).unwrap();
        assert_conforms("ErrorBody", &body);
        // A field the schema does not know would pass an open schema:
        // every key must be one it lists.
        let known: BTreeSet<String> = properties("Detail")
            .into_iter()
            .chain(["error".to_string(), "message".to_string()])
            .collect();
        for key in body.as_object().unwrap().keys() {
            assert!(known.contains(key), "{key} is not in the contract: {body}");
        }
    }
}

#[test]
fn operations_outside_the_open_paths_need_a_token_when_tokens_are_required() {
    let open = contract(false);
    for (path, item) in CONTRACT["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let is_open = crate::auth::OPEN.contains(&path.as_str());
            let documents_401 = op["responses"].get("401").is_some();
            assert_eq!(documents_401, !is_open, "{method} {path} and 401");
            let security = op.get("security");
            if is_open {
                assert!(security.is_none(), "{method} {path}");
            } else {
                assert_eq!(security, Some(&json!([{BEARER: []}])), "{method} {path}");
            }
            assert!(
                open["paths"][path][method].get("security").is_none(),
                "{method} {path} is open when tokens are not required"
            );
        }
    }
}

#[test]
fn aliases_are_listed_beside_their_field() {
    let request = &CONTRACT["components"]["schemas"]["ExecuteRequest"];
    assert_eq!(
        request["properties"]["network_mode"]["oneOf"],
        request["properties"]["network"]["oneOf"]
    );
    assert_eq!(
        request["not"],
        json!({"required": ["network", "network_mode"]})
    );
}
