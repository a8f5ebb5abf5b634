//! Choosing the pool for an execution, and saying precisely why there is
//! none: a host that is still starting, fetching an image or proving its
//! languages will serve the request shortly (temporary), while a language
//! that failed its smoke tests or a tier no pool offers will not (permanent).
//! Pure over the agent's state.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::crd::{ExecutorPoolSpec, LanguageSpec, NetworkTier, Reason};

use super::{Core, PoolKey, PoolRuntime};

/// The pool chosen for an execution, with what the request needs from it.
#[derive(Debug, Clone)]
pub struct Choice {
    /// The pool's key, `namespace/name`.
    pub pool: String,
    /// The language as the pool's image defines it.
    pub language: LanguageSpec,
    /// The pool's spec (limits, timeouts).
    pub spec: ExecutorPoolSpec,
}

/// Why no pool can take an execution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChoiceError {
    /// No pool on this host knows the language (by name or alias).
    #[error("unknown language {language:?}")]
    UnknownLanguage {
        language: String,
        /// Languages served here.
        available: Vec<String>,
    },
    /// The name is no language's name, and pools give it as an alias to
    /// different languages: the request must name one.
    #[error("{language:?} is an alias of more than one language here: {}; name the language", meanings.join(", "))]
    Ambiguous {
        language: String,
        /// `language (pool)` for each meaning.
        meanings: Vec<String>,
    },
    /// Pools know the language, but none can run it now; `blocker` says why.
    #[error("{language} with network tier {tier}: {blocker}")]
    Blocked {
        language: String,
        tier: NetworkTier,
        blocker: Blocker,
    },
}

/// What keeps a language from being served on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// The agent has not had a complete listing of its pools yet.
    Starting,
    /// The agent is shutting down: it finishes what runs and takes nothing
    /// new (another host, or this one once restarted, will).
    Draining,
    /// The pool's image is still being looked up, fetched or built.
    ImagePending { pool: String },
    /// The pool's languages are still being smoke-tested on this host.
    Proving { pool: String },
    /// Fetching or building the pool's image failed; it is tried again.
    ImageFailed { pool: String, message: String },
    /// The pool cannot be served as declared (invalid spec, missing or
    /// invalid LanguageImage) until someone changes it.
    PoolInvalid { pool: String, message: String },
    /// The language failed its smoke tests on this host.
    LanguageFailed { pool: String, message: String },
    /// No pool serves the language with the requested network tier (or
    /// that tier is not available at all); `offered` lists the tiers that
    /// do serve it.
    TierUnavailable { offered: Vec<NetworkTier> },
}

impl Blocker {
    /// Seconds after which asking again may succeed, for temporary
    /// conditions; `None` when waiting will not help.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Blocker::Draining => Some(1),
            Blocker::Starting | Blocker::Proving { .. } => Some(2),
            Blocker::ImagePending { .. } => Some(5),
            Blocker::ImageFailed { .. } => Some(30),
            Blocker::PoolInvalid { .. }
            | Blocker::LanguageFailed { .. }
            | Blocker::TierUnavailable { .. } => None,
        }
    }

    /// Whether the condition passes on its own.
    pub fn temporary(&self) -> bool {
        self.retry_after().is_some()
    }

    /// Order among several pools' blockers: the one closest to serving
    /// decides the answer (a pool still proving beats one that failed).
    fn rank(&self) -> u8 {
        match self {
            Blocker::Draining => 0,
            Blocker::Starting => 0,
            Blocker::Proving { .. } => 1,
            Blocker::ImagePending { .. } => 2,
            Blocker::ImageFailed { .. } => 3,
            Blocker::LanguageFailed { .. } => 4,
            Blocker::PoolInvalid { .. } => 5,
            Blocker::TierUnavailable { .. } => 6,
        }
    }
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocker::Starting => write!(
                f,
                "this host is starting and has not listed its pools yet; retry shortly"
            ),
            Blocker::Draining => write!(
                f,
                "this host is shutting down: it finishes the executions it runs and takes no new ones; retry"
            ),
            Blocker::ImagePending { pool } => write!(
                f,
                "pool {pool}'s image is still being fetched or built on this host; retry shortly"
            ),
            Blocker::Proving { pool } => write!(
                f,
                "smoke tests still running on this host (pool {pool}); retry shortly"
            ),
            Blocker::ImageFailed { pool, message } => write!(
                f,
                "pool {pool}'s image is unavailable on this host ({message}); it is tried again"
            ),
            Blocker::PoolInvalid { pool, message } => {
                write!(f, "pool {pool} cannot be served: {message}")
            }
            Blocker::LanguageFailed { pool, message } => write!(
                f,
                "the language failed its smoke tests on this host and is not served by pool {pool}: {message}"
            ),
            Blocker::TierUnavailable { offered } if offered.is_empty() => {
                write!(f, "no pool serves it with this network tier")
            }
            Blocker::TierUnavailable { offered } => {
                let tiers: Vec<String> = offered.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "no pool serves it with this network tier; served with: {}",
                    tiers.join(", ")
                )
            }
        }
    }
}

/// Why pool `key` cannot run `language` (its canonical name) now; `None`
/// when it can.
pub fn blocker(key: &str, p: &PoolRuntime, language: &str) -> Option<Blocker> {
    let pool = key.to_string();
    if let Some(problem) = p.problem() {
        let message = problem.message.clone();
        return Some(match problem.reason {
            Reason::NetworkTierUnsupported => Blocker::TierUnavailable { offered: vec![] },
            Reason::ImageUnavailable => Blocker::ImageFailed { pool, message },
            _ => Blocker::PoolInvalid { pool, message },
        });
    }
    if !p.serving() {
        return Some(Blocker::ImagePending { pool });
    }
    let Some(checks) = p.smoke_results() else {
        return Some(Blocker::Proving { pool });
    };
    match checks.iter().find(|c| c.language == language) {
        Some(c) if c.passed => None,
        Some(c) => Some(Blocker::LanguageFailed {
            pool,
            message: c.error.clone().unwrap_or_default(),
        }),
        None => Some(Blocker::LanguageFailed {
            pool,
            message: "not among the smoke-tested languages".into(),
        }),
    }
}

/// The answer when no pool can take the language: the blocker closest to
/// serving, or, when no pool of the tier knows it, the tiers that do.
pub fn verdict(blockers: Vec<Blocker>, offered: Vec<NetworkTier>) -> Blocker {
    blockers
        .into_iter()
        .min_by_key(Blocker::rank)
        .map(|b| match b {
            Blocker::TierUnavailable { .. } => Blocker::TierUnavailable {
                offered: offered.clone(),
            },
            b => b,
        })
        .unwrap_or(Blocker::TierUnavailable { offered })
}

/// Whether a pool can honour a request beyond its language and tier (its
/// limits within the pool's maxima).
pub type Fits<'a> = &'a dyn Fn(&LanguageSpec, &ExecutorPoolSpec) -> bool;

/// Picks the pool for `language` (a name or alias) and `tier` (see
/// `choose_fitting`), whatever the request asks of it.
pub fn choose(st: &Core, language: &str, tier: NetworkTier) -> Result<Choice, ChoiceError> {
    choose_fitting(st, language, tier, &|_, _| true)
}

/// Picks the pool for `language` and `tier`. A language's exact name beats
/// an alias: `sh` is the language named `sh` wherever one is, never another
/// language's alias. An alias that pools give to different languages is
/// ambiguous and refused. Among the pools that serve the language, one that
/// `fits` the request beats one that does not (which then answers precisely
/// why), then the one with the most warm containers.
pub fn choose_fitting(
    st: &Core,
    language: &str,
    tier: NetworkTier,
    fits: Fits<'_>,
) -> Result<Choice, ChoiceError> {
    let blocked = |blocker| ChoiceError::Blocked {
        language: language.to_string(),
        tier,
        blocker,
    };
    if st.stopping {
        return Err(blocked(Blocker::Draining));
    }
    if !st.listed {
        return Err(blocked(Blocker::Starting));
    }
    let exact = st.pools.values().any(|p| {
        p.languages()
            .iter()
            .any(|l| l.name.eq_ignore_ascii_case(language))
    });
    let means = |l: &LanguageSpec| {
        if exact {
            l.name.eq_ignore_ascii_case(language)
        } else {
            l.answers_to(language)
        }
    };
    if !exact {
        let meanings = meanings(st, language);
        if meanings.len() > 1 {
            return Err(ChoiceError::Ambiguous {
                language: language.to_string(),
                meanings: meanings
                    .into_iter()
                    .map(|(name, pools)| format!("{name} ({})", pools.join(", ")))
                    .collect(),
            });
        }
    }
    let mut known = false;
    let mut offered: Vec<NetworkTier> = Vec::new();
    let mut blockers = Vec::new();
    let mut best: Option<((bool, usize), Choice)> = None;
    for (key, p) in &st.pools {
        let Some(lang) = p.languages().iter().find(|l| means(l)) else {
            continue;
        };
        known = true;
        let network = p.resolved.spec.network;
        if network != tier {
            if blocker(key.as_str(), p, &lang.name).is_none() && !offered.contains(&network) {
                offered.push(network);
            }
            continue;
        }
        if let Some(b) = blocker(key.as_str(), p, &lang.name) {
            blockers.push(b);
            continue;
        }
        let rank = (fits(lang, &p.resolved.spec), p.warm.len());
        if best.as_ref().is_none_or(|(r, _)| rank > *r) {
            let choice = Choice {
                pool: key.to_string(),
                language: lang.clone(),
                spec: p.resolved.spec.clone(),
            };
            best = Some((rank, choice));
        }
    }
    match best {
        Some((_, c)) => Ok(c),
        None if known => Err(blocked(verdict(blockers, offered))),
        None => Err(ChoiceError::UnknownLanguage {
            language: language.to_string(),
            available: served(st),
        }),
    }
}

/// The languages that pools give `alias` to as an alias, each with the
/// pools that do, sorted.
fn meanings(st: &Core, alias: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, p) in &st.pools {
        for l in p.languages().iter().filter(|l| l.answers_to(alias)) {
            out.entry(l.name.clone()).or_default().push(key.to_string());
        }
    }
    out
}

/// For each pool, its aliases that another pool gives to a different
/// language (and that are no language's name, which would win): requests
/// for them are refused as ambiguous. Pure.
pub fn alias_conflicts(pools: &BTreeMap<PoolKey, PoolRuntime>) -> BTreeMap<PoolKey, Vec<String>> {
    let names: BTreeSet<String> = pools
        .values()
        .flat_map(|p| p.languages().iter().map(|l| l.name.to_ascii_lowercase()))
        .collect();
    let mut claims: BTreeMap<String, BTreeMap<String, Vec<&PoolKey>>> = BTreeMap::new();
    for (key, p) in pools {
        for l in p.languages() {
            for a in &l.aliases {
                claims
                    .entry(a.to_ascii_lowercase())
                    .or_default()
                    .entry(l.name.clone())
                    .or_default()
                    .push(key);
            }
        }
    }
    let mut out: BTreeMap<PoolKey, Vec<String>> = BTreeMap::new();
    for (alias, by_language) in claims {
        if by_language.len() < 2 || names.contains(&alias) {
            continue;
        }
        let told: Vec<String> = by_language
            .iter()
            .map(|(name, pools)| {
                let pools: Vec<&str> = pools.iter().map(|k| k.as_str()).collect();
                format!("{name} ({})", pools.join(", "))
            })
            .collect();
        let message = format!("alias {alias} means {}", told.join(" and "));
        for key in by_language.values().flatten() {
            out.entry((*key).clone()).or_default().push(message.clone());
        }
    }
    for v in out.values_mut() {
        v.dedup();
    }
    out
}

/// What keeps this host from serving everything it will serve soon: not
/// listed yet, or the closest-to-ready temporary blocker of any pool.
/// `None` when nothing is pending (what is not served now will not be).
pub fn pending(st: &Core) -> Option<Blocker> {
    if st.stopping {
        return Some(Blocker::Draining);
    }
    if !st.listed {
        return Some(Blocker::Starting);
    }
    st.pools
        .iter()
        .flat_map(|(key, p)| {
            p.languages()
                .iter()
                .filter_map(|l| blocker(key.as_str(), p, &l.name))
                .collect::<Vec<_>>()
        })
        .filter(Blocker::temporary)
        .min_by_key(Blocker::rank)
}

/// Names of the languages served here, sorted.
fn served(st: &Core) -> Vec<String> {
    let mut names: Vec<String> = st
        .pools
        .values()
        .flat_map(|p| p.served_languages().into_iter().map(|l| l.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::desired::{Problem, ResolvedPool};
    use crate::agent::smoke::LanguageCheck;

    const IMAGE: &str = "source: {recipe: small}\nlanguages:\n- {name: python, aliases: [py], sourceFile: m.py, run: python3 m.py}\n- {name: lua, sourceFile: m.lua, run: lua m.lua}\n";

    fn pool(network: &str) -> PoolRuntime {
        let spec = serde_yaml::from_str(&format!("image: small\nnetwork: {network}")).unwrap();
        PoolRuntime::new(ResolvedPool {
            key: "t/p".into(),
            name: "p".into(),
            generation: None,
            spec,
            warm: 1,
            image: Some(serde_yaml::from_str(IMAGE).unwrap()),
            problem: None,
        })
    }

    fn check(language: &str, passed: bool) -> LanguageCheck {
        LanguageCheck {
            language: language.into(),
            passed,
            error: (!passed).then(|| "hello: printed \"\"".into()),
            compile_ms: None,
            run_ms: 1,
        }
    }

    /// A pool whose image is in the store and whose smoke tests passed for
    /// python and failed for lua.
    fn proven(network: &str) -> PoolRuntime {
        let mut p = pool(network);
        p.hash = Some("h".into());
        p.smoke = Some((
            p.smoke_key().unwrap(),
            vec![check("python", true), check("lua", false)],
        ));
        p
    }

    fn state(pools: Vec<(&str, PoolRuntime)>) -> Core {
        super::super::with_pools(pools)
    }

    fn blocker_of(st: &Core, language: &str, tier: NetworkTier) -> Blocker {
        match choose(st, language, tier) {
            Err(ChoiceError::Blocked { blocker, .. }) => blocker,
            other => panic!("expected a blocker, got {other:?}"),
        }
    }

    #[test]
    fn each_pool_state_has_its_blocker() {
        let mut p = pool("zerotrust");
        assert_eq!(
            blocker("t/p", &p, "python"),
            Some(Blocker::ImagePending { pool: "t/p".into() })
        );
        p.hash = Some("h".into());
        assert_eq!(
            blocker("t/p", &p, "python"),
            Some(Blocker::Proving { pool: "t/p".into() })
        );
        let p = proven("zerotrust");
        assert_eq!(blocker("t/p", &p, "python"), None);
        assert!(matches!(
            blocker("t/p", &p, "lua"),
            Some(Blocker::LanguageFailed { .. })
        ));
        let mut failed = proven("zerotrust");
        failed.runtime_problem = Some(Problem {
            reason: Reason::ImageUnavailable,
            message: "no such image".into(),
        });
        assert!(matches!(
            blocker("t/p", &failed, "python"),
            Some(Blocker::ImageFailed { .. })
        ));
        let mut invalid = pool("zerotrust");
        invalid.resolved.problem = Some(Problem {
            reason: Reason::ImageNotFound,
            message: "LanguageImage \"small\" does not exist".into(),
        });
        assert!(matches!(
            blocker("t/p", &invalid, "python"),
            Some(Blocker::PoolInvalid { .. })
        ));
    }

    #[test]
    fn temporary_conditions_retry_and_permanent_ones_do_not() {
        let pool = || "t/p".to_string();
        for b in [
            Blocker::Starting,
            Blocker::ImagePending { pool: pool() },
            Blocker::Proving { pool: pool() },
            Blocker::ImageFailed {
                pool: pool(),
                message: "x".into(),
            },
        ] {
            assert!(b.temporary(), "{b}");
        }
        for b in [
            Blocker::PoolInvalid {
                pool: pool(),
                message: "x".into(),
            },
            Blocker::LanguageFailed {
                pool: pool(),
                message: "x".into(),
            },
            Blocker::TierUnavailable { offered: vec![] },
        ] {
            assert!(!b.temporary(), "{b}");
        }
        assert!(
            Blocker::Proving { pool: pool() }
                .to_string()
                .contains("smoke tests still running on this host")
        );
    }

    #[test]
    fn nothing_is_chosen_before_the_pools_are_listed() {
        let mut st = state(vec![("t/p", proven("zerotrust"))]);
        st.listed = false;
        assert_eq!(
            blocker_of(&st, "python", NetworkTier::Zerotrust),
            Blocker::Starting
        );
        // Even a language no pool names: the host cannot know yet.
        assert_eq!(
            blocker_of(&st, "cobol", NetworkTier::Zerotrust),
            Blocker::Starting
        );
    }

    #[test]
    fn the_pool_closest_to_serving_decides_the_answer() {
        let zt = NetworkTier::Zerotrust;
        let mut pending = pool("zerotrust");
        pending.resolved.key = "t/b".into();
        let st = state(vec![("t/a", proven("zerotrust")), ("t/b", pending)]);
        // lua failed in t/a, but t/b has not even fetched its image: wait.
        assert_eq!(
            blocker_of(&st, "lua", zt),
            Blocker::ImagePending { pool: "t/b".into() }
        );
        assert_eq!(choose(&st, "py", zt).unwrap().pool, "t/a");
        let st = state(vec![("t/a", proven("zerotrust"))]);
        assert!(matches!(
            blocker_of(&st, "lua", zt),
            Blocker::LanguageFailed { .. }
        ));
    }

    #[test]
    fn a_tier_no_pool_serves_is_unavailable_and_names_the_tiers_that_do() {
        let st = state(vec![("t/a", proven("zerotrust"))]);
        assert_eq!(
            blocker_of(&st, "python", NetworkTier::Semitrusted),
            Blocker::TierUnavailable {
                offered: vec![NetworkTier::Zerotrust]
            }
        );
        // A declared semitrusted pool (not available yet) says the same.
        let mut semi = pool("semitrusted");
        semi.resolved.problem = Some(Problem {
            reason: Reason::NetworkTierUnsupported,
            message: "not yet".into(),
        });
        let st = state(vec![("t/a", proven("zerotrust")), ("t/s", semi)]);
        assert_eq!(
            blocker_of(&st, "python", NetworkTier::Semitrusted),
            Blocker::TierUnavailable {
                offered: vec![NetworkTier::Zerotrust]
            }
        );
    }

    #[test]
    fn pending_names_what_the_host_still_waits_for() {
        let mut st = state(vec![("t/a", proven("zerotrust"))]);
        assert_eq!(pending(&st), None, "lua failed: waiting will not help");
        let mut proving = pool("zerotrust");
        proving.hash = Some("h".into());
        st.pools
            .insert(super::super::PoolKey::parse("t/b"), proving);
        assert_eq!(pending(&st), Some(Blocker::Proving { pool: "t/b".into() }));
        st.listed = false;
        assert_eq!(pending(&st), Some(Blocker::Starting));
    }

    #[test]
    fn unknown_languages_list_what_is_served() {
        let st = state(vec![("t/a", proven("zerotrust"))]);
        assert_eq!(
            choose(&st, "cobol", NetworkTier::Zerotrust).unwrap_err(),
            ChoiceError::UnknownLanguage {
                language: "cobol".into(),
                available: vec!["python".into()],
            }
        );
    }

    /// A ready pool `key` of `image` (languages YAML) with `spec`, every
    /// language proven, `warm` containers warm.
    fn serving(key: &str, languages: &str, spec: &str, warm: usize) -> PoolRuntime {
        let image = format!("source: {{recipe: small}}\nlanguages:\n{languages}");
        let mut p = PoolRuntime::new(ResolvedPool {
            key: key.into(),
            name: key.rsplit('/').next().unwrap().into(),
            generation: None,
            spec: serde_yaml::from_str(spec).unwrap(),
            warm: warm as u32,
            image: Some(serde_yaml::from_str(&image).unwrap()),
            problem: None,
        });
        p.hash = Some("h".into());
        let checks = p.languages().iter().map(|l| check(&l.name, true)).collect();
        p.smoke = Some((p.smoke_key().unwrap(), checks));
        for i in 0..warm {
            p.warm.push_back(format!("{key}-{i}").as_str().into());
        }
        p
    }

    #[test]
    fn an_exact_name_beats_another_languages_alias() {
        let small = serving(
            "t/small",
            "- {name: bash, aliases: [sh], sourceFile: m.sh, run: bash m.sh}\n",
            "image: small",
            5,
        );
        let poly = serving(
            "t/poly",
            "- {name: sh, aliases: [dash], sourceFile: m.sh, run: dash m.sh}\n",
            "image: small",
            1,
        );
        let st = state(vec![("t/small", small), ("t/poly", poly)]);
        for _ in 0..3 {
            let c = choose(&st, "sh", NetworkTier::Zerotrust).unwrap();
            assert_eq!(
                (c.pool.as_str(), c.language.name.as_str()),
                ("t/poly", "sh")
            );
        }
        assert_eq!(
            choose(&st, "bash", NetworkTier::Zerotrust).unwrap().pool,
            "t/small"
        );
        assert!(
            alias_conflicts(&st.pools).is_empty(),
            "a name wins: no conflict"
        );
    }

    #[test]
    fn an_alias_two_pools_give_to_different_languages_is_refused_and_reported() {
        let a = serving(
            "t/a",
            "- {name: python, aliases: [py], sourceFile: m.py, run: python3 m.py}\n",
            "image: small",
            1,
        );
        let b = serving(
            "t/b",
            "- {name: pypy, aliases: [py], sourceFile: m.py, run: pypy m.py}\n",
            "image: small",
            1,
        );
        let st = state(vec![("t/a", a), ("t/b", b)]);
        let e = choose(&st, "py", NetworkTier::Zerotrust).unwrap_err();
        assert_eq!(
            e,
            ChoiceError::Ambiguous {
                language: "py".into(),
                meanings: vec!["pypy (t/b)".into(), "python (t/a)".into()],
            }
        );
        assert!(e.to_string().contains("name the language"), "{e}");
        let conflicts = alias_conflicts(&st.pools);
        assert_eq!(conflicts.len(), 2);
        assert_eq!(
            conflicts[&PoolKey::parse("t/a")],
            ["alias py means pypy (t/b) and python (t/a)"]
        );
        let conds = crate::agent::status::conditions(&{
            let mut p = serving(
                "t/a",
                "- {name: python, aliases: [py], sourceFile: m.py, run: python3 m.py}\n",
                "image: small",
                1,
            );
            p.alias_conflicts = conflicts[&PoolKey::parse("t/a")].clone();
            p
        });
        assert_eq!(conds[1].reason, Reason::AliasConflict);
        // The same language under the same alias in two pools is no conflict.
        let c = serving(
            "t/c",
            "- {name: python, aliases: [py], sourceFile: m.py, run: python3 m.py}\n",
            "image: small",
            1,
        );
        let st = state(vec![("t/c", c), ("t/a", proven("zerotrust"))]);
        assert!(alias_conflicts(&st.pools).is_empty());
        assert_eq!(
            choose(&st, "py", NetworkTier::Zerotrust)
                .unwrap()
                .language
                .name,
            "python"
        );
    }

    #[test]
    fn a_pool_whose_maxima_fit_the_request_beats_a_warmer_one() {
        let py = "- {name: python, sourceFile: m.py, run: python3 m.py}\n";
        let small = serving("t/small", py, "image: small\nlimits: {memoryMib: 256}", 9);
        let big = serving("t/big", py, "image: small\nlimits: {memoryMib: 1024}", 1);
        let st = state(vec![("t/small", small), ("t/big", big)]);
        let wants_512 = |_: &LanguageSpec, spec: &ExecutorPoolSpec| spec.limits.memory_mib >= 512;
        for _ in 0..4 {
            let c = choose_fitting(&st, "python", NetworkTier::Zerotrust, &wants_512).unwrap();
            assert_eq!(c.pool, "t/big");
        }
        // With no fitting pool the warmest answers (and says why not).
        let wants_4096 = |_: &LanguageSpec, spec: &ExecutorPoolSpec| spec.limits.memory_mib >= 4096;
        let c = choose_fitting(&st, "python", NetworkTier::Zerotrust, &wants_4096).unwrap();
        assert_eq!(c.pool, "t/small");
        assert_eq!(
            choose(&st, "python", NetworkTier::Zerotrust).unwrap().pool,
            "t/small"
        );
    }
}
