//! Executions on this host, whatever API asked for them: the language of
//! unnamed code, the pool for a language, the checks a request must pass
//! (`request::plan`), a warm container, the stages, a second run when the
//! first one's answer was lost, and the execution metrics. Errors are the
//! domain's (`ExecError`); each API turns them into its own answers.

use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::agent::{AcquireError, Agent, Blocker, Choice, ChoiceError};
use crate::egress::NetworkRecord;
use crate::languages::detect::{self, Detection};
use crate::lxd::LxdError;
use crate::metrics::{ExecLabels, Metrics, PoolLabels};

use crate::execution::{Outcome, Progress, Watch, retryable, run_watched};

use super::request::{Invalid, Request, plan};

/// Why an execution did not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecError {
    /// No pool on this host can take the language now.
    #[error(transparent)]
    Unavailable(#[from] ChoiceError),
    /// The code names no language and no language of it is served yet.
    #[error("cannot detect the language yet: {0}")]
    DetectionPending(Blocker),
    /// The code names no language and none served here matches it.
    #[error("could not tell the language of this code")]
    Undetected {
        /// Languages served here.
        available: Vec<String>,
    },
    /// The code names no language and the detector is not sure enough of
    /// any (below the model's calibrated threshold).
    #[error("could not tell the language of this code for sure: {}", candidates.iter().map(|(l, c)| format!("{l} {c:.2}")).collect::<Vec<_>>().join(", "))]
    Uncertain {
        /// The likeliest languages, best first, with their confidence.
        candidates: Vec<(String, f64)>,
    },
    /// The request breaks a rule (see `request::plan`).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The pool had no container for it.
    #[error(transparent)]
    NoContainer(#[from] AcquireError),
}

/// A finished execution, with where it ran.
#[derive(Debug)]
pub struct Ran {
    pub outcome: Outcome,
    pub choice: Choice,
    pub container: String,
    /// Time spent waiting for the container (the last one, after a retry).
    pub queue_ms: u64,
    /// What a `semitrusted` execution's connections did through the egress
    /// proxy; `None` for `zerotrust`.
    pub network: Option<NetworkRecord>,
}

/// Runs executions on this host's agent. Cheap to clone.
#[derive(Clone)]
pub struct Executions {
    agent: Agent,
}

/// Runs an execution gets: one, and one more when the first one's answer
/// was lost (see `after`).
const ATTEMPTS: u32 = 2;

impl Executions {
    pub fn new(agent: Agent) -> Self {
        Self { agent }
    }

    /// The language of `code`, from its shebang, the extension of its
    /// `file_name`, or its content; a content answer below the model's
    /// threshold is refused with the likeliest languages rather than run.
    pub fn detect(&self, code: &str, file_name: Option<&str>) -> Result<Detection, ExecError> {
        let catalog = self.agent.catalog();
        let found = detect::detect_named(code, file_name, &catalog);
        if let Some(d) = found.as_ref().filter(|d| !d.is_sure()) {
            let mut candidates = vec![(d.language.clone(), d.confidence)];
            candidates.extend(d.alternatives.iter().cloned());
            return Err(ExecError::Uncertain { candidates });
        }
        found.ok_or_else(|| {
            // Languages not proven yet cannot be detected either.
            match self.agent.pending() {
                Some(b) => ExecError::DetectionPending(b),
                None => ExecError::Undetected {
                    available: catalog.into_iter().map(|e| e.name).collect(),
                },
            }
        })
    }

    /// The pool for `language` and `tier` on this host.
    pub fn choose(
        &self,
        language: &str,
        tier: crate::crd::NetworkTier,
    ) -> Result<Choice, ChoiceError> {
        self.agent.choose(language, tier)
    }

    /// Chooses the pool for `req` (one whose maxima fit the limits it
    /// asks, where there is one) and runs it there (see `run`).
    pub async fn execute(&self, req: Request, started: Instant) -> Result<Ran, ExecError> {
        self.execute_watched(req, started, None).await
    }

    /// `execute`, reporting its progress to `watch` (see `Progress`).
    pub async fn execute_watched(
        &self,
        req: Request,
        started: Instant,
        watch: Option<Watch>,
    ) -> Result<Ran, ExecError> {
        let choice = self.choose_for(&req)?;
        self.run_watched(choice, req, started, watch).await
    }

    /// Whether `req` could run here now: its language, a pool that serves
    /// it, and the checks of `request::plan`, without taking a container.
    pub fn check(&self, req: &Request) -> Result<(), ExecError> {
        let choice = self.choose_for(req)?;
        plan(req.clone(), &choice.language, &choice.spec)?;
        Ok(())
    }

    /// The pool for `req`: one whose maxima fit the limits it asks, where
    /// there is one.
    fn choose_for(&self, req: &Request) -> Result<Choice, ExecError> {
        let asked = &req.asked;
        let fits = |_: &crate::crd::LanguageSpec, pool: &crate::crd::ExecutorPoolSpec| {
            super::request::fits(asked, pool)
        };
        Ok(self.agent.choose_fitting(&req.language, req.tier, &fits)?)
    }

    /// Checks `req` against `choice`, takes a warm container (waiting until
    /// the pool's queue timeout, counted from `started`), runs the stages
    /// and lets the container be destroyed. LXD before 5.14 can drop the end
    /// of an exec's output on a busy host, and a container stopped out of
    /// band cannot run anything: then the code runs once more, in a fresh
    /// container. Nothing outlives its container, so a second run changes
    /// nothing but the answer, unless the code used the network: a
    /// `semitrusted` run that reached out (or tried) is never repeated.
    pub async fn run(
        &self,
        choice: Choice,
        req: Request,
        started: Instant,
    ) -> Result<Ran, ExecError> {
        self.run_watched(choice, req, started, None).await
    }

    /// `run`, reporting its progress to `watch`.
    pub async fn run_watched(
        &self,
        choice: Choice,
        req: Request,
        started: Instant,
        watch: Option<Watch>,
    ) -> Result<Ran, ExecError> {
        let p = plan(req, &choice.language, &choice.spec)?;
        let deadline = started + Duration::from_millis(choice.spec.execution.queue_timeout_ms);
        let mut attempt = 0;
        let semitrusted = choice.spec.network == crate::crd::NetworkTier::Semitrusted;
        let (outcome, container, queue_ms, network) = loop {
            attempt += 1;
            let lease = self.agent.acquire(&choice.pool, deadline).await?;
            let span = tracing::info_span!("execute", pool = %lease.pool, container = %lease.container, language = %choice.language.name, attempt);
            if let Some(w) = &watch {
                let _ = w.send(Progress::Started {
                    attempt,
                    container: lease.container.clone(),
                });
            }
            let result = run_watched(
                self.agent.lxd(),
                &lease.container,
                &p.job,
                &p.limits,
                watch.as_ref(),
            )
            .instrument(span)
            .await;
            let container = lease.container.clone();
            let queue_ms = lease.queued.as_millis() as u64;
            // Read before the lease destroys the container and its socket.
            let network = self
                .agent
                .network_record(&container)
                .filter(|_| semitrusted);
            lease.finish(result.as_ref().is_ok_and(Outcome::clean));
            let e = match result {
                Ok(o) => break (o, container, queue_ms, network),
                Err(e) => e,
            };
            let used_network = network
                .as_ref()
                .is_some_and(|n| !n.reached.is_empty() || !n.denied.is_empty());
            match after(attempt, &e, used_network) {
                Next::Again => tracing::warn!(
                    container,
                    error = %e,
                    "the code's answer was lost (output cut, or the container was not running); running it again in a fresh container"
                ),
                Next::Fail => {
                    tracing::error!(container, error = %e, "execution failed inside unsandbox");
                    let o =
                        Outcome::internal("the container could not run the code; it was destroyed");
                    break (o, container, queue_ms, network);
                }
            }
        };
        if let Some(w) = &watch {
            let _ = w.send(Progress::Finished(Box::new(outcome.clone())));
        }
        let ran = Ran {
            outcome,
            choice,
            container,
            queue_ms,
            network,
        };
        record(self.agent.metrics(), &ran);
        Ok(ran)
    }
}

/// What follows a run that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Its answer was lost; run it again.
    Again,
    /// The host failed: the caller gets an internal error.
    Fail,
}

/// Decides what follows run number `attempt` (from 1) that failed with
/// `e`; a run that used the network is not repeated. Pure.
fn after(attempt: u32, e: &LxdError, used_network: bool) -> Next {
    if attempt < ATTEMPTS && retryable(e) && !used_network {
        Next::Again
    } else {
        Next::Fail
    }
}

/// Counts a finished execution: time queued and running, per pool, and the
/// verdict per language and pool.
fn record(m: &Metrics, ran: &Ran) {
    let pool = PoolLabels {
        pool: ran.choice.pool.clone(),
    };
    m.queue_seconds
        .get_or_create(&pool)
        .observe(ran.queue_ms as f64 / 1000.0);
    m.execution_seconds
        .get_or_create(&pool)
        .observe(ran.outcome.exec_ms() as f64 / 1000.0);
    m.executions
        .get_or_create(&ExecLabels {
            language: ran.choice.language.name.clone(),
            pool: ran.choice.pool.clone(),
            status: ran.outcome.status.as_str().to_string(),
        })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost() -> LxdError {
        LxdError::OutputLost
    }

    #[test]
    fn a_lost_answer_runs_once_more_and_no_more() {
        assert_eq!(after(1, &lost(), false), Next::Again);
        assert_eq!(after(2, &lost(), false), Next::Fail);
        assert_eq!(
            after(1, &lost(), true),
            Next::Fail,
            "its requests had effects"
        );
        let stopped = LxdError::Api {
            status: 400,
            message: "Instance is not running".into(),
        };
        assert_eq!(after(1, &stopped, false), Next::Again);
        let other = LxdError::Operation {
            message: "the runner failed before the command ended".into(),
        };
        assert_eq!(after(1, &other, false), Next::Fail);
    }

    #[test]
    fn metrics_count_the_verdict_per_language_and_pool() {
        let m = Metrics::default();
        let ran = Ran {
            outcome: Outcome::internal("x"),
            choice: Choice {
                pool: "t/p".into(),
                language: serde_yaml::from_str("{name: python, sourceFile: main.py, run: x}")
                    .unwrap(),
                spec: serde_yaml::from_str("image: small").unwrap(),
            },
            container: "c".into(),
            queue_ms: 1500,
            network: None,
        };
        record(&m, &ran);
        let text = m.render();
        assert!(
            text.contains(r#"language="python""#) && text.contains(r#"status="internal_error""#),
            "{text}"
        );
    }
}
