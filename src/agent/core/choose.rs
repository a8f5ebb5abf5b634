//! Choosing the pool for an execution, and saying precisely why there is
//! none: a host that is still starting, fetching an image or proving its
//! languages will serve the request shortly (temporary), while a language
//! that failed its smoke tests or a tier no pool offers will not (permanent).
//! Pure over the agent's state.

use std::fmt;

use crate::crd::{ExecutorPoolSpec, LanguageSpec, NetworkTier, Reason};

use super::{Core, PoolRuntime};

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

/// Picks the pool for `language` (a name or alias) and `tier`: among the
/// pools that serve it, the one with the most warm containers.
pub fn choose(st: &Core, language: &str, tier: NetworkTier) -> Result<Choice, ChoiceError> {
    let blocked = |blocker| ChoiceError::Blocked {
        language: language.to_string(),
        tier,
        blocker,
    };
    if !st.listed {
        return Err(blocked(Blocker::Starting));
    }
    let mut known = false;
    let mut offered: Vec<NetworkTier> = Vec::new();
    let mut blockers = Vec::new();
    let mut best: Option<(usize, Choice)> = None;
    for (key, p) in &st.pools {
        let Some(lang) = p.languages().iter().find(|l| l.answers_to(language)) else {
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
        let warm = p.warm.len();
        if best.as_ref().is_none_or(|(w, _)| warm > *w) {
            let choice = Choice {
                pool: key.to_string(),
                language: lang.clone(),
                spec: p.resolved.spec.clone(),
            };
            best = Some((warm, choice));
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

/// What keeps this host from serving everything it will serve soon: not
/// listed yet, or the closest-to-ready temporary blocker of any pool.
/// `None` when nothing is pending (what is not served now will not be).
pub fn pending(st: &Core) -> Option<Blocker> {
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
}
