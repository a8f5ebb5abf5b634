//! The jobs this agent holds, in memory: bounded in number, finished ones
//! kept for a bounded time. Which jobs to forget is decided here, apart
//! from the tasks that run them. A job's id names the node and the run of
//! the agent that holds it (see `JobId`).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::AbortHandle;

use super::super::feed::Feed;
use super::super::types::ExecuteResponse;
use crate::http_error::ErrorBody;

/// A job's id: `{run}{random}.{node}`, where `run` (8 hex digits) names
/// this run of the agent and `random` (24 hex digits) the job. Any agent
/// can tell from an id which node holds the job, and the holder can tell a
/// job of an earlier run (lost when it restarted) from an unknown one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobId {
    pub run: String,
    pub random: String,
    pub node: String,
}

impl JobId {
    /// A new id for a job of run `run` on `node`.
    pub fn new(run: &str, node: &str) -> Self {
        Self {
            run: run.to_string(),
            random: format!("{:024x}", rand::random::<u128>() >> 32),
            node: node.to_string(),
        }
    }

    /// Reads an id; `None` when it is not one this API gives out.
    pub fn parse(s: &str) -> Option<Self> {
        let (head, node) = s.split_once('.')?;
        let hex = |p: &str| {
            p.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        };
        let node_ok = !node.is_empty()
            && node.len() <= 253
            && node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        (head.len() == 32 && hex(head) && node_ok).then(|| Self {
            run: head[..8].to_string(),
            random: head[8..].to_string(),
            node: node.to_string(),
        })
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}.{}", self.run, self.random, self.node)
    }
}

/// How a job ended without a result.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The HTTP status the synchronous API would have answered.
    pub status: u16,
    pub body: ErrorBody,
}

/// What became of a job's callback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    pub attempts: u32,
    pub delivered: bool,
    pub last_error: Option<String>,
}

/// One job.
#[derive(Debug)]
pub struct Job {
    pub id: JobId,
    /// Who asked for it: only they may see or cancel it.
    pub owner: String,
    pub created: SystemTime,
    pub feed: Feed,
    /// Cancels the task that runs it.
    pub abort: Option<AbortHandle>,
    pub ended: Option<Instant>,
    pub outcome: Option<Result<ExecuteResponse, Failure>>,
    pub cancelled: bool,
    pub callback_url: Option<String>,
    pub delivery: Delivery,
}

impl Job {
    /// Whether the job can no longer change (its callback aside).
    pub fn over(&self) -> bool {
        self.ended.is_some()
    }
}

/// Why a job could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this agent holds {0} jobs that have not finished, its maximum; retry when some have")]
pub struct Full(pub usize);

/// The jobs held, with their bounds.
#[derive(Debug)]
pub struct Store {
    jobs: HashMap<String, Job>,
    max: usize,
    keep: Duration,
}

impl Store {
    /// At most `max` jobs; finished ones are kept `keep`.
    pub fn new(max: usize, keep: Duration) -> Self {
        Self {
            jobs: HashMap::new(),
            max,
            keep,
        }
    }

    /// Forgets jobs that ended more than `keep` ago.
    pub fn expire(&mut self, now: Instant) {
        let keep = self.keep;
        self.jobs
            .retain(|_, j| j.ended.is_none_or(|t| now.duration_since(t) < keep));
    }

    /// Adds `job`, first forgetting expired jobs and then, when still full,
    /// the finished job that ended first. Refused when every job held is
    /// still running.
    pub fn insert(&mut self, job: Job, now: Instant) -> Result<(), Full> {
        self.expire(now);
        if self.jobs.len() >= self.max {
            let oldest = self
                .jobs
                .values()
                .filter_map(|j| j.ended.map(|t| (t, j.id.to_string())))
                .min();
            match oldest {
                Some((_, id)) => {
                    self.jobs.remove(&id);
                }
                None => return Err(Full(self.jobs.len())),
            }
        }
        self.jobs.insert(job.id.to_string(), job);
        Ok(())
    }

    #[cfg(test)]
    pub fn get(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Job> {
        self.jobs.get_mut(id)
    }

    pub fn remove(&mut self, id: &str) -> Option<Job> {
        self.jobs.remove(id)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: u8) -> Job {
        Job {
            id: JobId {
                run: "0000abcd".into(),
                random: format!("{n:024x}"),
                node: "node-a".into(),
            },
            owner: "t".into(),
            created: SystemTime::now(),
            feed: Feed::new(),
            abort: None,
            ended: None,
            outcome: None,
            cancelled: false,
            callback_url: None,
            delivery: Delivery::default(),
        }
    }

    #[test]
    fn an_id_names_its_node_and_run_and_reads_back() {
        let host = JobId::new("0a0b0c0d", "My_Host");
        assert_eq!(
            JobId::parse(&host.to_string()),
            Some(host),
            "a standalone hostname"
        );
        let id = JobId::new("0a0b0c0d", "lxd-node-1.example");
        let s = id.to_string();
        assert_eq!(s.len(), 32 + 1 + "lxd-node-1.example".len());
        assert_eq!(JobId::parse(&s), Some(id));
        for bad in [
            "",
            "abc.node",
            "0a0b0c0d000000000000000000000000",
            "0A0B0C0D000000000000000000000000.node",
            "0a0b0c0d00000000000000000000000g.node",
            "0a0b0c0d000000000000000000000000.no/de",
            "0a0b0c0d000000000000000000000000.no de",
            "0a0b0c0d000000000000000000000000.",
        ] {
            assert_eq!(JobId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_full_store_forgets_the_oldest_finished_job_and_refuses_when_all_run() {
        let t0 = Instant::now();
        let mut store = Store::new(2, Duration::from_secs(60));
        let mut a = job(1);
        a.ended = Some(t0);
        let mut b = job(2);
        b.ended = Some(t0 + Duration::from_secs(1));
        store.insert(a, t0).unwrap();
        store.insert(b, t0).unwrap();
        store.insert(job(3), t0 + Duration::from_secs(2)).unwrap();
        assert!(store.get(&job(1).id.to_string()).is_none(), "oldest ended");
        assert!(store.get(&job(2).id.to_string()).is_some());
        store.remove(&job(2).id.to_string());
        store.insert(job(4), t0).unwrap();
        assert_eq!(store.insert(job(5), t0), Err(Full(2)), "both running");
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn finished_jobs_are_kept_for_the_keep_time_and_running_ones_always() {
        let t0 = Instant::now();
        let mut store = Store::new(10, Duration::from_secs(60));
        let mut done = job(1);
        done.ended = Some(t0);
        store.insert(done, t0).unwrap();
        store.insert(job(2), t0).unwrap();
        store.expire(t0 + Duration::from_secs(59));
        assert_eq!(store.len(), 2);
        store.expire(t0 + Duration::from_secs(61));
        assert_eq!(store.len(), 1);
        store.expire(t0 + Duration::from_secs(86_400));
        assert!(store.get(&job(2).id.to_string()).is_some());
    }
}
