//! A token's maximum limits against what a request body asks for. Only
//! values a request names are checked here (`check`, in the middleware);
//! the limits a request leaves to the pool are capped with `cap` where they
//! are resolved, from the token's quota in the request's `Caller`. Pure.

use std::time::Duration;

use serde_json::Value;

use super::tokens::Quota;
use crate::execution::Limits;

const MIB: u64 = 1024 * 1024;

/// A limit asked for above the token's maximum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimit {
    /// The body's field, as the client wrote it.
    pub field: &'static str,
    pub asked: u64,
    /// The maximum, in the field's unit.
    pub maximum: u64,
}

/// Which execution API a path belongs to, for the names of its fields.
fn fields(path: &str) -> &'static [(&'static str, Cap)] {
    const NATIVE: &[(&str, Cap)] = &[
        ("timeout_ms", Cap::TimeoutMs),
        ("compile_timeout_ms", Cap::TimeoutMs),
        ("memory_mib", Cap::MemoryMib),
        ("compile_memory_mib", Cap::MemoryMib),
        ("max_output_bytes", Cap::OutputBytes),
    ];
    // Piston's timeouts are milliseconds and its memory limits bytes.
    const PISTON: &[(&str, Cap)] = &[
        ("run_timeout", Cap::TimeoutMs),
        ("compile_timeout", Cap::TimeoutMs),
        ("run_memory_limit", Cap::MemoryBytes),
        ("compile_memory_limit", Cap::MemoryBytes),
    ];
    if matches!(path, "/run" | "/run/stream" | "/jobs") || path.starts_with("/execute/") {
        NATIVE
    } else if path == "/api/v2/execute" {
        PISTON
    } else {
        &[]
    }
}

#[derive(Debug, Clone, Copy)]
enum Cap {
    TimeoutMs,
    MemoryMib,
    MemoryBytes,
    OutputBytes,
}

impl Cap {
    fn maximum(self, q: &Quota) -> Option<u64> {
        match self {
            Cap::TimeoutMs => q.max_timeout_ms,
            Cap::MemoryMib => q.max_memory_mib,
            Cap::MemoryBytes => q.max_memory_mib.map(|m| m.saturating_mul(MIB)),
            Cap::OutputBytes => q.max_output_bytes,
        }
    }
}

/// Whether the quota caps anything a body could ask for.
pub fn any(q: &Quota) -> bool {
    q.max_timeout_ms.is_some() || q.max_memory_mib.is_some() || q.max_output_bytes.is_some()
}

/// The first limit in `body` above the token's maximum. Fields that are
/// absent or not numbers are left to the handler (which says what is wrong);
/// Piston's `-1` ("no extra limit") asks for nothing.
pub fn check(path: &str, body: &Value, q: &Quota) -> Result<(), OverLimit> {
    if path == "/batch" {
        // Each item is a native execution.
        let items = body.get("items").and_then(Value::as_array);
        return items
            .into_iter()
            .flatten()
            .try_for_each(|item| check("/run", item, q));
    }
    for &(field, cap) in fields(path) {
        let (Some(maximum), Some(asked)) =
            (cap.maximum(q), body.get(field).and_then(Value::as_u64))
        else {
            continue;
        };
        if asked > maximum {
            return Err(OverLimit {
                field,
                asked,
                maximum,
            });
        }
    }
    Ok(())
}

/// Caps limits resolved against a pool at the token's maxima: what a
/// request that names no limit gets, where a pool's default is higher.
pub fn cap(limits: &mut Limits, q: &Quota) {
    for stage in [&mut limits.compile, &mut limits.run] {
        if let Some(ms) = q.max_timeout_ms {
            stage.wall = stage.wall.min(Duration::from_millis(ms));
        }
        if let Some(mib) = q.max_memory_mib {
            stage.memory_mib = stage.memory_mib.min(u32::try_from(mib).unwrap_or(u32::MAX));
        }
        if let Some(bytes) = q.max_output_bytes {
            stage.output_cap = stage
                .output_cap
                .min(usize::try_from(bytes).unwrap_or(usize::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn quota() -> Quota {
        Quota {
            max_timeout_ms: Some(5000),
            max_memory_mib: Some(128),
            max_output_bytes: Some(1000),
            ..Quota::default()
        }
    }

    #[test]
    fn asked_limits_above_the_maximum_are_named() {
        let q = quota();
        assert_eq!(check("/run", &json!({"code": "x"}), &q), Ok(()));
        assert_eq!(check("/run", &json!({"timeout_ms": 5000}), &q), Ok(()));
        assert_eq!(
            check("/execute/python", &json!({"compile_timeout_ms": 5001}), &q),
            Err(OverLimit {
                field: "compile_timeout_ms",
                asked: 5001,
                maximum: 5000
            })
        );
        assert_eq!(
            check("/run", &json!({"memory_mib": 256}), &q)
                .unwrap_err()
                .field,
            "memory_mib"
        );
        assert_eq!(
            check("/run", &json!({"max_output_bytes": 1001}), &q)
                .unwrap_err()
                .maximum,
            1000
        );
        assert_eq!(
            check("/jobs", &json!({"memory_mib": 256}), &q)
                .unwrap_err()
                .field,
            "memory_mib"
        );
        let batch = json!({"items": [{"code": "1"}, {"code": "2", "timeout_ms": 5001}]});
        assert_eq!(check("/batch", &batch, &q).unwrap_err().asked, 5001);
        assert_eq!(
            check("/batch", &json!({"items": [{"code": "1"}]}), &q),
            Ok(())
        );
        let piston = check(
            "/api/v2/execute",
            &json!({"run_memory_limit": 129 * MIB}),
            &q,
        );
        assert_eq!(piston.unwrap_err().maximum, 128 * MIB);
        assert_eq!(
            check(
                "/api/v2/execute",
                &json!({"run_memory_limit": -1, "run_timeout": 3000}),
                &q
            ),
            Ok(())
        );
        assert_eq!(
            check("/run", &json!({"timeout_ms": "lots"}), &q),
            Ok(()),
            "the handler says"
        );
        assert_eq!(check("/languages", &json!({"timeout_ms": 9e9}), &q), Ok(()));
        assert_eq!(
            check(
                "/run",
                &json!({"timeout_ms": 1e9 as u64}),
                &Quota::default()
            ),
            Ok(())
        );
        assert!(any(&q) && !any(&Quota::default()));
    }

    #[test]
    fn pool_defaults_are_capped_at_the_tokens_maxima() {
        use crate::execution::StageLimits;
        let stage = |ms, bytes, mib| StageLimits {
            wall: Duration::from_millis(ms),
            output_cap: bytes,
            memory_mib: mib,
        };
        let mut limits = Limits {
            compile: stage(10_000, 65536, 512),
            run: stage(3000, 65536, 64),
            launched_memory_mib: 512,
        };
        cap(&mut limits, &quota());
        assert_eq!(limits.compile, stage(5000, 1000, 128));
        assert_eq!(limits.run, stage(3000, 1000, 64), "lower pool values stay");
        assert_eq!(limits.launched_memory_mib, 512);
        let before = limits;
        cap(&mut limits, &Quota::default());
        assert_eq!(limits, before);
    }
}
