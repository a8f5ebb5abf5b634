//! The agent's in-memory state: per pool, the warm queue and counts; per
//! container, its pool and phase. Plain data with small pure methods; locks
//! and effects live in the agent.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::crd::{ImageSource, LanguageSpec, UnavailableLanguage};

use super::desired::{Problem, ResolvedPool};
use super::plan::Phase;
use super::smoke::{self, LanguageCheck};

/// Where a host stands with one image.
#[derive(Debug, Clone)]
pub enum ImageState {
    /// Being looked up or built.
    Pending,
    Ready {
        fingerprint: String,
        /// Toolchain versions the image build recorded, by language.
        versions: BTreeMap<String, String>,
    },
    Failed {
        message: String,
        retry_at: Instant,
    },
}

/// One pool on this host.
#[derive(Debug)]
pub struct PoolRuntime {
    pub resolved: ResolvedPool,
    /// Fingerprint of the pool's image, once it is in the store.
    pub fingerprint: Option<String>,
    /// Hash of the current container shape, once the image is known.
    pub hash: Option<String>,
    /// Warm containers, oldest first.
    pub warm: VecDeque<String>,
    pub launching: u32,
    pub busy: u32,
    /// Bounds concurrent executions on this host.
    pub concurrency: Arc<Semaphore>,
    pub max_concurrent: u32,
    /// Consecutive failed launches, and when launching may be tried again.
    pub failures: u32,
    pub backoff_until: Option<Instant>,
    pub last_error: Option<String>,
    /// A problem found at run time (image missing, build failed).
    pub runtime_problem: Option<Problem>,
    /// Whether the pool has reached its warm count since its shape last
    /// changed: it is then ready, and a burst that empties it for a moment
    /// does not make it unready.
    pub filled_once: bool,
    /// Smoke test results on this host, with the key they were run for.
    pub smoke: Option<(String, Vec<LanguageCheck>)>,
    /// The key of the smoke suite running now, if one is.
    pub smoke_running: Option<String>,
    /// Versions recorded in the pool's image, by language.
    pub versions: BTreeMap<String, String>,
    /// The pool's conditions on this host as the reconcile loop last
    /// observed them, with the times they last changed.
    pub observed_conditions: Vec<crate::crd::condition::Condition>,
}

impl PoolRuntime {
    pub fn new(resolved: ResolvedPool) -> Self {
        let max = resolved.spec.max_concurrent.max(1);
        Self {
            resolved,
            fingerprint: None,
            hash: None,
            warm: VecDeque::new(),
            launching: 0,
            busy: 0,
            concurrency: Arc::new(Semaphore::new(max as usize)),
            max_concurrent: max,
            failures: 0,
            backoff_until: None,
            last_error: None,
            runtime_problem: None,
            filled_once: false,
            smoke: None,
            smoke_running: None,
            versions: BTreeMap::new(),
            observed_conditions: Vec::new(),
        }
    }

    /// The warm target on this host; zero while the pool cannot be served.
    pub fn target(&self) -> u32 {
        if self.serving() {
            self.resolved.warm
        } else {
            0
        }
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

    /// Launches to start now: the deficit, unless backing off.
    pub fn deficit(&self, now: Instant) -> u32 {
        if self.backoff_until.is_some_and(|t| now < t) {
            return 0;
        }
        self.target()
            .saturating_sub(self.warm.len() as u32 + self.launching)
    }

    /// Takes the warm containers above the target out of the queue, oldest
    /// first, for the caller to destroy.
    pub fn surplus(&mut self) -> Vec<String> {
        let keep = self.target().saturating_sub(self.launching) as usize;
        let mut out = Vec::new();
        while self.warm.len() > keep {
            if let Some(c) = self.warm.pop_front() {
                out.push(c);
            }
        }
        out
    }

    /// Room for adopted containers (see `plan::Want`).
    pub fn room(&self) -> u32 {
        self.target()
            .saturating_sub(self.warm.len() as u32 + self.launching)
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
            .as_deref()
            .map(|h| smoke::key(h, self.languages()))
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

    /// Resizes the concurrency bound after a spec change.
    pub fn set_max_concurrent(&mut self, max: u32) {
        let max = max.max(1);
        if max > self.max_concurrent {
            self.concurrency
                .add_permits((max - self.max_concurrent) as usize);
        } else if max < self.max_concurrent {
            self.concurrency
                .forget_permits((self.max_concurrent - max) as usize);
        }
        self.max_concurrent = max;
    }
}

/// Everything the agent tracks.
#[derive(Debug, Default)]
pub struct State {
    /// Whether the pools have been applied from a complete listing at least
    /// once; until then the agent does not know what it serves.
    pub listed: bool,
    pub pools: BTreeMap<String, PoolRuntime>,
    /// Every container the agent is responsible for, by name: (pool key, phase).
    pub tracked: HashMap<String, (String, Phase)>,
    pub images: HashMap<ImageSource, ImageState>,
}

impl State {
    /// Moves a tracked container to another phase.
    pub fn set_phase(&mut self, name: &str, phase: Phase) {
        if let Some(entry) = self.tracked.get_mut(name) {
            entry.1 = phase;
        }
    }
}

/// A servable pool `key` of the small image wanting `warm` containers, its
/// shape known and nothing launched: the agent's unit tests start from it.
#[cfg(test)]
pub(crate) fn test_pool(key: &str, warm: u32) -> PoolRuntime {
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
        p.warm
            .extend(["a".to_string(), "b".to_string(), "c".to_string()]);
        assert_eq!(p.deficit(now), 0);
        assert_eq!(p.surplus(), ["a"]);
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
        assert_eq!(p.surplus(), ["a"]);
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
        let mut st = State {
            listed: true,
            ..Default::default()
        };
        st.pools.insert("ns/p".into(), p);
        assert!(crate::agent::status::serving(&st).is_empty(), "not proven");
        let p = st.pools.get_mut("ns/p").unwrap();
        let passed = LanguageCheck {
            language: "python".into(),
            passed: true,
            error: None,
            compile_ms: None,
            run_ms: 1,
        };
        p.smoke = Some((p.smoke_key().unwrap(), vec![passed]));
        assert!(crate::agent::status::serving(&st).is_empty(), "not filled");
        st.pools.get_mut("ns/p").unwrap().filled_once = true;
        let serving = crate::agent::status::serving(&st);
        assert_eq!(serving.len(), 1);
        assert_eq!(serving[0].languages, ["python"]);
    }

    #[test]
    fn concurrency_resizes() {
        let mut p = pool(1);
        assert_eq!(p.concurrency.available_permits(), 16);
        p.set_max_concurrent(4);
        assert_eq!(p.concurrency.available_permits(), 4);
        p.set_max_concurrent(10);
        assert_eq!(p.concurrency.available_permits(), 10);
    }
}
