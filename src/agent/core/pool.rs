//! One pool on this host: what it should be (resolved from its resource and
//! image), where it stands (image, shape, warm queue, counts, failures,
//! smoke results). Plain data with pure queries; only the core changes it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::crd::condition::Condition;
use crate::crd::{LanguageSpec, NodeRollout, RolloutPhase, UnavailableLanguage, short_fingerprint};

use super::super::desired::{Problem, ResolvedPool};
use super::super::smoke::{self, LanguageCheck};
use super::demand::{Demand, Target};
use super::ids::{ContainerName, PoolKey, ShapeHash};
use super::rollout::{Candidate, Generation};

/// One pool on this host.
#[derive(Debug)]
pub struct PoolRuntime {
    pub(super) key: PoolKey,
    pub(super) resolved: ResolvedPool,
    /// Fingerprint of the image new containers come from, once it is in
    /// the store (during a rollout, the old one until the new one passed
    /// its smoke tests).
    pub(super) fingerprint: Option<String>,
    /// The shape new containers are launched with, once the image is
    /// known; warm containers of another shape are outdated.
    pub(super) hash: Option<ShapeHash>,
    /// Whether the shape changed (or became known) and LXD has not been
    /// listed since: containers of an earlier run are adopted before any is
    /// launched.
    pub(super) needs_listing: bool,
    /// Warm containers, oldest first.
    pub(super) warm: VecDeque<ContainerName>,
    pub(super) launching: u32,
    pub(super) busy: u32,
    /// Busy containers that are to come back (a recycling pool's, before
    /// their last execution) and containers being recycled: the warm
    /// target counts them, so taking one launches no replacement.
    pub(super) returning: u32,
    /// Containers of an earlier run being checked for adoption.
    pub(super) inspecting: u32,
    /// Consecutive failed launches, and when launching may be tried again.
    pub(super) failures: u32,
    pub(super) backoff_until: Option<Instant>,
    pub(super) last_error: Option<String>,
    /// A problem found at run time (image missing, build failed).
    pub(super) runtime_problem: Option<Problem>,
    /// Whether the pool has reached its warm count since its shape last
    /// changed: it is then ready, and a burst that empties it for a moment
    /// does not make it unready.
    pub(super) filled_once: bool,
    /// Smoke test results on this host, with the key they were run for.
    pub(super) smoke: Option<(String, Vec<LanguageCheck>)>,
    /// The key of the smoke suite running now, if one is.
    pub(super) smoke_running: Option<String>,
    /// Versions recorded in the pool's image, by language.
    pub(super) versions: BTreeMap<String, String>,
    /// This pool's aliases that another pool gives to a different language.
    pub(super) alias_conflicts: Vec<String>,
    /// What this host saw of the pool's demand (for `spec.autoscale`).
    pub(super) demand: Demand,
    /// The warm count autoscale chose on the last pass, and why.
    pub(super) autoscaled: Option<Target>,
    /// The pool's conditions on this host as last observed, with the times
    /// they last changed.
    pub(super) observed_conditions: Vec<Condition>,
    /// A newer image's generation being smoke-tested (or blocked) while
    /// the current one serves (see `rollout`).
    pub(super) candidate: Option<Candidate>,
    /// Why the image the spec names now could not be had, while the
    /// current one keeps serving.
    pub(super) image_blocked: Option<String>,
    /// The fingerprint rolled away from, while warm containers of it remain.
    pub(super) retiring: Option<String>,
    /// Warm containers of an earlier shape, as of the last pass.
    pub(super) outdated: u32,
}

impl PoolRuntime {
    pub(super) fn new(resolved: ResolvedPool) -> Self {
        Self {
            key: PoolKey::parse(&resolved.key),
            resolved,
            fingerprint: None,
            hash: None,
            needs_listing: false,
            warm: VecDeque::new(),
            launching: 0,
            busy: 0,
            returning: 0,
            inspecting: 0,
            failures: 0,
            backoff_until: None,
            last_error: None,
            runtime_problem: None,
            filled_once: false,
            smoke: None,
            smoke_running: None,
            versions: BTreeMap::new(),
            alias_conflicts: Vec::new(),
            demand: Demand::default(),
            autoscaled: None,
            observed_conditions: Vec::new(),
            candidate: None,
            image_blocked: None,
            retiring: None,
            outdated: 0,
        }
    }

    /// The generation new containers are launched with, once known.
    pub(super) fn generation(&self) -> Option<Generation> {
        Some(Generation {
            hash: self.hash.clone()?,
            fingerprint: self.fingerprint.clone()?,
            versions: self.versions.clone(),
        })
    }

    /// Fingerprint of the image new containers come from, once known.
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// Warm containers of an earlier image or shape, as of the last pass:
    /// they serve until taken (`OnReplenish`) or are being replaced
    /// (`Rolling`).
    pub fn outdated(&self) -> u32 {
        self.outdated
    }

    /// Why a newer image does not replace the one this host serves (its
    /// smoke tests failed here, or it could not be had), if so.
    pub fn rollout_blocked(&self) -> Option<String> {
        let serving = short_fingerprint(self.fingerprint.as_deref().unwrap_or_default());
        if let Some(c) = &self.candidate
            && let Some(why) = &c.blocked
        {
            return Some(format!(
                "new image {} failed its smoke tests on this host, which keeps serving image {serving}: {why}",
                short_fingerprint(&c.generation.fingerprint)
            ));
        }
        self.image_blocked.as_ref().map(|why| {
            format!(
                "the new image could not be had, so this host keeps serving image {serving}: {why}"
            )
        })
    }

    /// Where this host stands in moving the pool to a new image, while it
    /// does.
    pub fn rollout(&self) -> Option<NodeRollout> {
        let current = self.fingerprint.as_deref().map(short_fingerprint);
        let total = self.warm_count();
        let message = self.rollout_blocked();
        if let Some(c) = &self.candidate {
            let phase = if c.blocked.is_some() {
                RolloutPhase::Blocked
            } else {
                RolloutPhase::Proving
            };
            return Some(NodeRollout {
                phase,
                from: current,
                to: short_fingerprint(&c.generation.fingerprint),
                updated: 0,
                total,
                message,
            });
        }
        if self.image_blocked.is_some() {
            return Some(NodeRollout {
                phase: RolloutPhase::Blocked,
                from: current,
                to: String::new(),
                updated: 0,
                total,
                message,
            });
        }
        (self.outdated > 0).then(|| NodeRollout {
            phase: RolloutPhase::Replacing,
            from: self.retiring.as_deref().map(short_fingerprint),
            to: current.unwrap_or_default(),
            updated: total.saturating_sub(self.outdated),
            total,
            message: None,
        })
    }

    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    /// The pool as resolved from its resource and image.
    pub fn resolved(&self) -> &ResolvedPool {
        &self.resolved
    }

    /// Warm containers now.
    pub fn warm_count(&self) -> u32 {
        self.warm.len() as u32
    }

    /// Containers handed to executions and not yet destroyed.
    pub fn busy(&self) -> u32 {
        self.busy
    }

    /// Containers being launched.
    pub fn launching(&self) -> u32 {
        self.launching
    }

    /// Consecutive failed launches.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The last launch error, while launches fail.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The conditions as last observed, with the times they changed.
    pub fn observed_conditions(&self) -> &[Condition] {
        &self.observed_conditions
    }

    /// The current container shape, once known.
    pub fn hash(&self) -> Option<&ShapeHash> {
        self.hash.as_ref()
    }

    /// The warm target on this host: the fixed count, or the one autoscale
    /// chose; zero while the pool cannot be served.
    pub fn target(&self) -> u32 {
        match (self.serving(), &self.autoscaled) {
            (false, _) => 0,
            (true, Some(t)) => t.warm,
            (true, None) => self.resolved.warm,
        }
    }

    /// Why autoscale chose the current target, when the pool autoscales.
    pub fn autoscale_reason(&self) -> Option<&str> {
        self.autoscaled.as_ref().map(|t| t.why.as_str())
    }

    /// Whether the pool is served: valid, image present.
    pub fn serving(&self) -> bool {
        self.resolved.servable() && self.runtime_problem.is_none() && self.hash.is_some()
    }

    /// The problem that keeps the pool from being served, if any.
    pub fn problem(&self) -> Option<&Problem> {
        self.resolved
            .problem
            .as_ref()
            .or(self.runtime_problem.as_ref())
    }

    /// Whether launches wait after failures.
    pub(super) fn backing_off(&self, now: Instant) -> bool {
        self.backoff_until.is_some_and(|t| now < t)
    }

    /// Launches to start now: the deficit, unless backing off or LXD has
    /// not been listed for the current shape yet.
    pub(super) fn deficit(&self, now: Instant) -> u32 {
        if self.backing_off(now) || self.needs_listing {
            return 0;
        }
        self.room()
    }

    /// How many warm containers above the target to destroy: the oldest.
    pub(super) fn surplus(&self) -> usize {
        let keep = self
            .target()
            .saturating_sub(self.launching + self.inspecting + self.returning)
            as usize;
        self.warm.len().saturating_sub(keep)
    }

    /// Room for more warm containers: the target less what is warm,
    /// launching, about to be adopted or to come back from an execution.
    pub fn room(&self) -> u32 {
        self.target().saturating_sub(
            self.warm.len() as u32 + self.launching + self.inspecting + self.returning,
        )
    }

    /// Containers to come back from an execution or being recycled.
    pub fn returning(&self) -> u32 {
        self.returning
    }

    /// Whether nothing can ever be handed out: nothing warm, nothing
    /// launching and a warm target of zero.
    pub fn none_can_come(&self) -> bool {
        self.warm.is_empty() && self.launching == 0 && self.returning == 0 && self.target() == 0
    }

    /// Whether the pool serves, its languages have been proven here, and it
    /// has been full at least once.
    pub fn ready(&self) -> bool {
        self.serving() && self.smoke_results().is_some() && (self.filled_once || self.target() == 0)
    }

    /// The languages of the pool's image.
    pub fn languages(&self) -> &[LanguageSpec] {
        self.resolved
            .image
            .as_ref()
            .map(|i| i.languages.as_slice())
            .unwrap_or_default()
    }

    /// What the smoke results must have been run for to count.
    pub fn smoke_key(&self) -> Option<String> {
        self.hash
            .as_ref()
            .map(|h| smoke::key(h.as_str(), self.languages()))
    }

    /// The smoke results, if they are current.
    pub fn smoke_results(&self) -> Option<&[LanguageCheck]> {
        match (&self.smoke, self.smoke_key()) {
            (Some((k, checks)), Some(key)) if *k == key => Some(checks),
            _ => None,
        }
    }

    /// Languages served on this host: the pool serves and their smoke tests
    /// passed here.
    pub fn served_languages(&self) -> Vec<&LanguageSpec> {
        let Some(checks) = self.smoke_results().filter(|_| self.serving()) else {
            return vec![];
        };
        self.languages()
            .iter()
            .filter(|l| checks.iter().any(|c| c.language == l.name && c.passed))
            .collect()
    }

    /// Languages of the image not served here, and why.
    pub fn unavailable_languages(&self) -> Vec<UnavailableLanguage> {
        if !self.serving() {
            return vec![];
        }
        match self.smoke_results() {
            None => self
                .languages()
                .iter()
                .map(|l| UnavailableLanguage {
                    name: l.name.clone(),
                    message: "smoke tests not finished on this host".into(),
                })
                .collect(),
            Some(checks) => checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| UnavailableLanguage {
                    name: c.language.clone(),
                    message: c.error.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// The version served for a language: the image's record, else the spec's.
    pub fn version_of(&self, lang: &LanguageSpec) -> Option<String> {
        self.versions
            .get(&lang.name)
            .cloned()
            .or_else(|| lang.version.clone())
    }
}

/// A servable pool `key` of the small image wanting `warm` containers, its
/// shape known and nothing launched: the agent's unit tests start from it.
#[cfg(test)]
fn test_pool(key: &str, warm: u32) -> PoolRuntime {
    let spec = serde_yaml::from_str(&format!("image: small\nwarm: {warm}")).unwrap();
    let image = serde_yaml::from_str("source: {recipe: small}\nlanguages: []").unwrap();
    let name = key.rsplit('/').next().unwrap_or(key).to_string();
    let mut p = PoolRuntime::new(ResolvedPool {
        key: key.into(),
        name,
        generation: None,
        spec,
        warm,
        image: Some(image),
        problem: None,
    });
    p.hash = Some("h".into());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(warm: u32) -> PoolRuntime {
        test_pool("ns/p", warm)
    }

    #[test]
    fn deficit_and_surplus() {
        let now = Instant::now();
        let mut p = pool(3);
        assert_eq!(p.deficit(now), 3);
        p.launching = 1;
        p.warm.extend(["a".into(), "b".into(), "c".into()]);
        assert_eq!(p.deficit(now), 0);
        assert_eq!(p.surplus(), 1);
        p.backoff_until = Some(now + std::time::Duration::from_secs(5));
        p.warm.clear();
        assert_eq!(p.deficit(now), 0);
    }

    #[test]
    fn unserved_pool_wants_nothing() {
        let mut p = pool(3);
        p.hash = None;
        assert_eq!(p.target(), 0);
        p.warm.push_back("a".into());
        assert_eq!(p.surplus(), 1);
    }

    #[test]
    fn only_languages_that_passed_their_smoke_tests_here_are_served() {
        let mut p = pool(1);
        p.resolved.image = Some(
            serde_yaml::from_str(
                "source: {recipe: small}\nlanguages:\n- {name: python, sourceFile: m.py, run: python3 m.py}\n- {name: lua, sourceFile: m.lua, run: lua m.lua}\n",
            )
            .unwrap(),
        );
        // Before the tests ran: nothing is served, everything is pending.
        assert!(p.served_languages().is_empty());
        assert_eq!(p.unavailable_languages().len(), 2);
        assert!(!p.ready());
        let conds = crate::agent::status::conditions(&p);
        assert_eq!(conds[0].reason, crate::crd::Reason::ProvingLanguages);

        let check = |language: &str, passed: bool| LanguageCheck {
            language: language.into(),
            passed,
            error: (!passed).then(|| "hello: printed \"\"".to_string()),
            compile_ms: None,
            run_ms: 1,
        };
        p.smoke = Some((
            p.smoke_key().unwrap(),
            vec![check("python", true), check("lua", false)],
        ));
        let served: Vec<&str> = p
            .served_languages()
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(served, ["python"]);
        let u = p.unavailable_languages();
        assert_eq!((u.len(), u[0].name.as_str()), (1, "lua"));
        let conds = crate::agent::status::conditions(&p);
        assert_eq!(conds[1].reason, crate::crd::Reason::LanguagesUnavailable);
        assert!(
            conds[1].message.contains("lua: hello: printed"),
            "{}",
            conds[1].message
        );

        // Results for another shape (a new image) do not count.
        p.hash = Some("other".into());
        assert!(p.served_languages().is_empty());
        assert!(p.smoke_results().is_none());
    }

    #[test]
    fn a_host_serves_what_its_ready_pools_proved() {
        let mut p = pool(1);
        p.resolved.image = Some(
            serde_yaml::from_str(
                "source: {recipe: small}\nlanguages:\n- {name: python, sourceFile: m.py, run: python3 m.py}\n",
            )
            .unwrap(),
        );
        let mut st = super::super::with_pools(vec![("ns/p", p)]);
        assert!(crate::agent::status::serving(&st).is_empty(), "not proven");
        let p = st.pools.get_mut(&PoolKey::parse("ns/p")).unwrap();
        let passed = LanguageCheck {
            language: "python".into(),
            passed: true,
            error: None,
            compile_ms: None,
            run_ms: 1,
        };
        p.smoke = Some((p.smoke_key().unwrap(), vec![passed]));
        assert!(crate::agent::status::serving(&st).is_empty(), "not filled");
        st.pools
            .get_mut(&PoolKey::parse("ns/p"))
            .unwrap()
            .filled_once = true;
        let serving = crate::agent::status::serving(&st);
        assert_eq!(serving.len(), 1);
        assert_eq!(serving[0].languages, ["python"]);
    }
}
