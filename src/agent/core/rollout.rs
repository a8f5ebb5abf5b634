//! Moving a pool to a new image on this host, as pure decisions. The image
//! behind a LanguageImage can change under the same spec (a rebuilt image
//! behind its alias or recipe) or with it (a new source): the new one is
//! smoke-tested while the old one keeps serving, then replaces it per the
//! pool's `spec.rollout`. A change of anything else that shapes containers
//! (limits, network tier, reuse) replaces them at once, as old containers
//! must not serve with other limits or another tier.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::crd::{ExecutorPoolSpec, Rollout, RolloutStrategy};

use super::super::desired::container_hash;
use super::super::smoke::LanguageCheck;
use super::ids::ShapeHash;

/// A container shape with the image behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub hash: ShapeHash,
    pub fingerprint: String,
    /// Toolchain versions the image build recorded, by language.
    pub versions: BTreeMap<String, String>,
}

/// What the host knows now of the image a pool's spec names.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// The pool cannot be served (invalid spec, missing image resource).
    Unservable,
    /// The image is being looked up or built.
    Pending,
    /// The image could not be had.
    Failed(String),
    /// The image is in the store; its generation for the pool's spec.
    Ready(Generation),
}

/// What to do with a pool's current generation.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Keep serving the current generation, with no newer one to prove;
    /// `blocked` says why a newer image could not be had.
    Keep { blocked: Option<String> },
    /// Smoke-test this generation while the current one serves.
    Prove(Generation),
    /// Use this generation at once (none: nothing can be served yet).
    Switch(Option<Generation>),
}

/// Decides what happens to a pool's `current` generation given what is
/// `seen` of its image now. A rollout needs a current generation that
/// `serves` (some language proven here) and still fits the spec apart from
/// its image; otherwise the pool switches at once, as on a first start.
pub fn step(
    current: Option<&Generation>,
    serves: bool,
    spec: &ExecutorPoolSpec,
    seen: Seen,
) -> Step {
    let rolls =
        current.filter(|c| serves && c.hash.as_str() == container_hash(spec, &c.fingerprint));
    match (rolls, seen) {
        (_, Seen::Unservable) => Step::Switch(None),
        (Some(c), Seen::Ready(next)) if next.hash == c.hash => Step::Keep { blocked: None },
        (Some(_), Seen::Ready(next)) => Step::Prove(next),
        (Some(_), Seen::Pending) => Step::Keep { blocked: None },
        (Some(_), Seen::Failed(message)) => Step::Keep {
            blocked: Some(message),
        },
        (None, Seen::Ready(next)) => Step::Switch(Some(next)),
        (None, Seen::Pending | Seen::Failed(_)) => Step::Switch(None),
    }
}

/// A newer generation being proven on this host while the current serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub generation: Generation,
    /// Its smoke results, with the key they were run for.
    pub smoke: Option<(String, Vec<LanguageCheck>)>,
    /// Why it does not replace the current generation: the smoke tests
    /// that failed. It stays blocked until the image or the languages
    /// (their smoke tests) change.
    pub blocked: Option<String>,
    /// Smoke containers that could not be started, in a row, and when the
    /// next may be tried.
    pub failures: u32,
    pub backoff_until: Option<Instant>,
}

impl Candidate {
    pub fn new(generation: Generation) -> Self {
        Self {
            generation,
            smoke: None,
            blocked: None,
            failures: 0,
            backoff_until: None,
        }
    }
}

/// Whether a new generation may replace the current one: every language
/// the current one `serves` here passed its smoke tests on the new one.
/// The error lists the languages that did not, with why.
pub fn judge(serves: &[&str], checks: &[LanguageCheck]) -> Result<(), String> {
    let failed: Vec<String> = serves
        .iter()
        .filter_map(|name| match checks.iter().find(|c| c.language == *name) {
            Some(c) if c.passed => None,
            Some(c) => Some(format!(
                "{name}: {}",
                c.error.as_deref().unwrap_or("failed")
            )),
            None => Some(format!("{name}: not smoke-tested")),
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// How many outdated warm containers (of an image rolled away from) to
/// destroy now. `OnReplenish`: none, they serve until taken. `Rolling`: as
/// many as keep the host at most `maxUnavailable` below its warm `target`
/// (replacements launching count as unavailable, so the next old ones go
/// only once those are warm).
pub fn to_replace(rollout: &Rollout, target: u32, warm: u32, outdated: u32) -> u32 {
    match rollout.strategy {
        RolloutStrategy::OnReplenish => 0,
        RolloutStrategy::Rolling => {
            let unavailable = target.saturating_sub(warm);
            rollout
                .max_unavailable()
                .saturating_sub(unavailable)
                .min(outdated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> ExecutorPoolSpec {
        serde_yaml::from_str(&format!("image: small\n{extra}")).unwrap()
    }

    fn generation(spec: &ExecutorPoolSpec, fingerprint: &str) -> Generation {
        Generation {
            hash: ShapeHash(container_hash(spec, fingerprint)),
            fingerprint: fingerprint.into(),
            versions: BTreeMap::new(),
        }
    }

    #[test]
    fn only_a_serving_pool_whose_image_alone_changed_rolls() {
        let s = spec("");
        let old = generation(&s, "fp1");
        let new = generation(&s, "fp2");
        let ready = |g: &Generation| Seen::Ready(g.clone());
        // Serving, a new fingerprint: proven first.
        assert_eq!(
            step(Some(&old), true, &s, ready(&new)),
            Step::Prove(new.clone())
        );
        // The same image: nothing to do.
        assert_eq!(
            step(Some(&old), true, &s, ready(&old)),
            Step::Keep { blocked: None }
        );
        // A new source still being fetched, or failing: the old one serves.
        assert_eq!(
            step(Some(&old), true, &s, Seen::Pending),
            Step::Keep { blocked: None }
        );
        assert_eq!(
            step(Some(&old), true, &s, Seen::Failed("gone".into())),
            Step::Keep {
                blocked: Some("gone".into())
            }
        );
        // Nothing served yet (first start, or nothing proven): at once.
        assert_eq!(
            step(None, false, &s, ready(&new)),
            Step::Switch(Some(new.clone()))
        );
        assert_eq!(
            step(Some(&old), false, &s, ready(&new)),
            Step::Switch(Some(new.clone()))
        );
        assert_eq!(step(None, false, &s, Seen::Pending), Step::Switch(None));
        // Other limits: old containers must not serve with them.
        let bigger = spec("limits: {memoryMib: 512}");
        let next = generation(&bigger, "fp2");
        assert_eq!(
            step(Some(&old), true, &bigger, ready(&next)),
            Step::Switch(Some(next))
        );
        assert_eq!(
            step(Some(&old), true, &bigger, Seen::Pending),
            Step::Switch(None)
        );
        // An invalid pool serves nothing.
        assert_eq!(
            step(Some(&old), true, &s, Seen::Unservable),
            Step::Switch(None)
        );
    }

    #[test]
    fn the_rollout_setting_is_not_part_of_the_shape() {
        let a = spec("");
        let b = spec("rollout: {strategy: Rolling, maxUnavailable: 4}");
        assert_eq!(container_hash(&a, "fp"), container_hash(&b, "fp"));
        assert_eq!(
            step(
                Some(&generation(&a, "fp")),
                true,
                &b,
                Seen::Ready(generation(&b, "fp"))
            ),
            Step::Keep { blocked: None }
        );
    }

    fn check(language: &str, passed: bool) -> LanguageCheck {
        LanguageCheck {
            language: language.into(),
            passed,
            error: (!passed).then(|| "hello: printed \"\"".to_string()),
            compile_ms: None,
            run_ms: 1,
        }
    }

    #[test]
    fn a_new_image_must_serve_what_the_old_one_serves() {
        let checks = [check("python", true), check("lua", false)];
        assert_eq!(judge(&["python"], &checks), Ok(()));
        assert_eq!(
            judge(&["python", "lua", "bash"], &checks),
            Err("lua: hello: printed \"\"; bash: not smoke-tested".into())
        );
    }

    #[test]
    fn rolling_keeps_the_host_at_most_max_unavailable_below_its_target() {
        let rolling = |n| Rollout {
            strategy: RolloutStrategy::Rolling,
            max_unavailable: Some(n),
        };
        assert_eq!(to_replace(&Rollout::default(), 3, 3, 3), 0, "OnReplenish");
        assert_eq!(to_replace(&rolling(1), 3, 3, 3), 1);
        assert_eq!(
            to_replace(&rolling(1), 3, 2, 2),
            0,
            "one replacement launching"
        );
        assert_eq!(to_replace(&rolling(2), 5, 5, 5), 2);
        assert_eq!(to_replace(&rolling(2), 5, 4, 4), 1);
        assert_eq!(
            to_replace(&rolling(5), 3, 3, 1),
            1,
            "no more than are outdated"
        );
        assert_eq!(
            to_replace(&rolling(1), 3, 4, 2),
            1,
            "a surplus is no shortfall"
        );
    }
}
