//! Status conditions: the Kubernetes `Condition` type and pure helpers that
//! keep `lastTransitionTime` stable while a condition does not change.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub use super::Reason;

/// Condition type: the resource does what it asks for.
pub const READY: &str = "Ready";
/// Condition type: the resource works, but less than it asks for.
pub const DEGRADED: &str = "Degraded";
/// Condition type (kstatus): the controller is still working towards the
/// spec (nodes filling, cleanup running); `False` once it is done or stuck.
pub const RECONCILING: &str = "Reconciling";
/// Condition type (kstatus): no progress is possible without a change to the
/// spec (invalid spec, missing or invalid image, unsupported network tier).
pub const STALLED: &str = "Stalled";

/// A desired condition, before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Condition type, one of the constants above.
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: bool,
    /// Why the condition has this status; written as its CamelCase string.
    pub reason: Reason,
    /// What a person should know.
    pub message: String,
}

impl Desired {
    /// A desired condition.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Builds the new condition list from the desired conditions, keeping the
/// previous transition time of any condition whose status did not change.
pub fn merge(
    previous: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = status_str(d.status).to_string();
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == d.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason.to_string(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Whether the condition of this type is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_kept_while_status_holds() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let first = merge(
            &[],
            &[Desired::new(READY, true, Reason::Warm, "all warm")],
            Some(1),
            t0,
        );
        let second = merge(
            &first,
            &[Desired::new(READY, true, Reason::Warm, "still warm")],
            Some(2),
            t1,
        );
        assert_eq!(second[0].last_transition_time, Time(t0));
        assert_eq!(second[0].observed_generation, Some(2));
        let third = merge(
            &second,
            &[Desired::new(READY, false, Reason::Filling, "x")],
            Some(2),
            t1,
        );
        assert_eq!(third[0].last_transition_time, Time(t1));
        assert_eq!(third[0].reason, "Filling", "the reason's wire string");
        assert!(!is_true(&third, READY));
        assert!(is_true(&second, READY));
    }
}
