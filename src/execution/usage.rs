//! CPU time and peak memory of one stage, read from the container's cgroup
//! on the LXD host (the agent runs there). LXD names a container's cgroup
//! `lxc.payload.<name>` in the default project and
//! `lxc.payload.<project>_<name>` in others.
//!
//! cgroup v1: `cpuacct.usage` (ns, cumulative: the stage gets the difference)
//! and `memory.max_usage_in_bytes` (reset by writing 0 before the stage).
//! cgroup v2: `cpu.stat` `usage_usec` (cumulative) and `memory.peak`, which
//! kernels from 6.12 reset for the writer's open file only; older kernels
//! refuse the write, and the peak is then the container's since it started.
//! Limit events, compared before and after the stage so that one stage's
//! events are never blamed on another: OOM kills (v1 `memory.oom_control`,
//! v2 `memory.events`, line `oom_kill`) and forks refused at `pids.max`
//! (`pids.events`, line `max`, both versions), and the times usage reached
//! the memory limit (v1 `memory.failcnt`, v2 `memory.events` line `max`).
//! Anonymous memory (v1 `memory.stat` `total_rss`, v2 `anon`) is sampled
//! while the stage runs ([`Meter::sample`]): reaching the limit with little
//! but anonymous memory in use is a program stalled at its memory limit,
//! which the kernel may leave reclaiming file pages instead of OOM-killing.
//! Whatever cannot be read is `None`: measurement never fails a stage.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Where the host's cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// What one stage used; `None` where the cgroup could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_ms: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// The most anonymous memory seen in use while the stage ran (sampled).
    pub anon_peak_bytes: Option<u64>,
    /// Limit events counted by the container's cgroup during the stage.
    pub events: LimitEvents,
}

/// How often the kernel enforced a limit during a stage; `None` where the
/// counter could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitEvents {
    /// Processes the OOM killer ended: the memory limit was hit.
    pub oom_kills: Option<u64>,
    /// Forks or clones refused because the process limit was reached.
    pub pids_max: Option<u64>,
    /// Times memory usage reached the memory limit (the kernel then
    /// reclaims, and OOM-kills only when reclaim fails).
    pub memory_max: Option<u64>,
}

/// The cgroup directory name LXD gives a container.
pub fn cgroup_name(project: &str, container: &str) -> String {
    if project == "default" {
        format!("lxc.payload.{container}")
    } else {
        format!("lxc.payload.{project}_{container}")
    }
}

/// The files to read for a container under `root`, by cgroup version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// Cumulative CPU time: v1 `cpuacct.usage` (ns) or v2 `cpu.stat`.
    pub cpu: PathBuf,
    /// Peak memory: v1 `memory.max_usage_in_bytes` or v2 `memory.peak`.
    pub peak: PathBuf,
    /// OOM kills: v1 `memory.oom_control` or v2 `memory.events`.
    pub oom: PathBuf,
    /// Refused forks: `pids.events`.
    pub pids: PathBuf,
    /// Memory statistics: `memory.stat`.
    pub stat: PathBuf,
    /// Times usage reached the limit: v1 `memory.failcnt`, v2 `memory.events`.
    pub at_limit: PathBuf,
    pub v2: bool,
}

/// Candidate file sets, most specific first: v1 (separate memory and
/// cpuacct hierarchies), v2 at the root, v2 in a hybrid host's `unified`.
pub fn candidates(root: &Path, name: &str) -> [Files; 3] {
    [
        Files {
            cpu: root.join("cpuacct").join(name).join("cpuacct.usage"),
            peak: root
                .join("memory")
                .join(name)
                .join("memory.max_usage_in_bytes"),
            oom: root.join("memory").join(name).join("memory.oom_control"),
            pids: root.join("pids").join(name).join("pids.events"),
            stat: root.join("memory").join(name).join("memory.stat"),
            at_limit: root.join("memory").join(name).join("memory.failcnt"),
            v2: false,
        },
        Files {
            cpu: root.join(name).join("cpu.stat"),
            peak: root.join(name).join("memory.peak"),
            oom: root.join(name).join("memory.events"),
            pids: root.join(name).join("pids.events"),
            stat: root.join(name).join("memory.stat"),
            at_limit: root.join(name).join("memory.events"),
            v2: true,
        },
        Files {
            cpu: root.join("unified").join(name).join("cpu.stat"),
            peak: root.join("unified").join(name).join("memory.peak"),
            oom: root.join("unified").join(name).join("memory.events"),
            pids: root.join("unified").join(name).join("pids.events"),
            stat: root.join("unified").join(name).join("memory.stat"),
            at_limit: root.join("unified").join(name).join("memory.events"),
            v2: true,
        },
    ]
}

/// A single number, as cgroup files hold them.
pub fn parse_number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `usage_usec` of a v2 `cpu.stat`.
pub fn parse_usage_usec(cpu_stat: &str) -> Option<u64> {
    keyed(cpu_stat, "usage_usec")
}

/// The value of `key` in a flat keyed cgroup file (`oom_kill 2`, `max 61`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| parse_number(v)).flatten()
    })
}

/// Cumulative counters of limit events, as read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    oom_kills: Option<u64>,
    pids_max: Option<u64>,
    memory_max: Option<u64>,
}

impl Counters {
    fn read(files: &Files) -> Self {
        let at_limit = read(&files.at_limit);
        Self {
            oom_kills: read(&files.oom).and_then(|t| keyed(&t, "oom_kill")),
            pids_max: read(&files.pids).and_then(|t| keyed(&t, "max")),
            memory_max: at_limit.and_then(|t| {
                if files.v2 {
                    keyed(&t, "max")
                } else {
                    parse_number(&t)
                }
            }),
        }
    }

    /// The events between `self` (before) and `after`.
    fn since(self, after: Counters) -> LimitEvents {
        let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
        LimitEvents {
            oom_kills: delta(self.oom_kills, after.oom_kills),
            pids_max: delta(self.pids_max, after.pids_max),
            memory_max: delta(self.memory_max, after.memory_max),
        }
    }
}

/// Cumulative CPU time in microseconds from a cpu file's text.
pub fn cpu_usec(text: &str, v2: bool) -> Option<u64> {
    if v2 {
        parse_usage_usec(text)
    } else {
        parse_number(text).map(|ns| ns / 1000)
    }
}

/// Anonymous memory in bytes from a `memory.stat` text: v1 `total_rss`
/// (the container's whole subtree), v2 `anon` (recursive already).
pub fn anon_bytes(stat: &str, v2: bool) -> Option<u64> {
    keyed(stat, if v2 { "anon" } else { "total_rss" })
}

/// A measurement under way.
#[derive(Debug)]
pub struct Meter {
    files: Option<Files>,
    cpu_start: Option<u64>,
    events_start: Counters,
    anon_peak: Option<u64>,
    /// The v2 `memory.peak` file a reset was written to: only this open file
    /// reports the peak since the reset.
    peak: Option<File>,
}

impl Meter {
    /// Starts measuring the container's cgroup under [`CGROUP_ROOT`].
    pub fn start(project: &str, container: &str) -> Self {
        Self::start_at(Path::new(CGROUP_ROOT), project, container)
    }

    pub fn start_at(root: &Path, project: &str, container: &str) -> Self {
        let name = cgroup_name(project, container);
        let Some(files) = candidates(root, &name)
            .into_iter()
            .find(|f| f.cpu.exists() || f.peak.exists())
        else {
            return Self {
                files: None,
                cpu_start: None,
                events_start: Counters::default(),
                anon_peak: None,
                peak: None,
            };
        };
        let mut peak = None;
        if let Ok(mut f) = OpenOptions::new().read(true).write(true).open(&files.peak) {
            // v1 resets for everyone with "0"; v2 (6.12+) for this open file.
            let reset: &[u8] = if files.v2 { b"reset\n" } else { b"0\n" };
            if f.write_all(reset).is_ok() && files.v2 {
                peak = Some(f);
            }
        }
        let cpu_start = read(&files.cpu).and_then(|t| cpu_usec(&t, files.v2));
        let events_start = Counters::read(&files);
        Self {
            files: Some(files),
            cpu_start,
            events_start,
            anon_peak: None,
            peak,
        }
    }

    /// Reads the anonymous memory in use now, keeping the most seen.
    pub fn sample(&mut self) {
        let Some(files) = &self.files else { return };
        if let Some(anon) = read(&files.stat).and_then(|t| anon_bytes(&t, files.v2)) {
            self.anon_peak = Some(self.anon_peak.map_or(anon, |p| p.max(anon)));
        }
    }

    /// What the cgroup used since [`Meter::start`].
    pub fn finish(self) -> Usage {
        let Some(files) = self.files else {
            return Usage::default();
        };
        let cpu_end = read(&files.cpu).and_then(|t| cpu_usec(&t, files.v2));
        let cpu_ms = match (self.cpu_start, cpu_end) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) / 1000),
            _ => None,
        };
        let memory = match self.peak {
            Some(mut f) => {
                let mut text = String::new();
                f.seek(SeekFrom::Start(0))
                    .and_then(|_| f.read_to_string(&mut text))
                    .ok()
                    .and_then(|_| parse_number(&text))
            }
            None => read(&files.peak).and_then(|t| parse_number(&t)),
        };
        Usage {
            cpu_ms,
            memory_bytes: memory.filter(|m| *m > 0),
            anon_peak_bytes: self.anon_peak,
            events: self.events_start.since(Counters::read(&files)),
        }
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lxd_cgroup_names() {
        assert_eq!(cgroup_name("default", "c1"), "lxc.payload.c1");
        assert_eq!(cgroup_name("ut-x-1", "c1"), "lxc.payload.ut-x-1_c1");
    }

    #[test]
    fn parses_v1_and_v2_cpu() {
        assert_eq!(cpu_usec("57474290\n", false), Some(57474));
        let stat = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
        assert_eq!(cpu_usec(stat, true), Some(123456));
        assert_eq!(cpu_usec("user_usec 5\n", true), None);
        assert_eq!(parse_number("max\n"), None);
        assert_eq!(parse_number(" 16691200\n"), Some(16691200));
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed(events, "oom_kill"), Some(1));
        assert_eq!(keyed(events, "max"), Some(12));
        assert_eq!(keyed(events, "oom_kill_disable"), None);
    }

    #[test]
    fn measures_a_fake_v1_hierarchy() {
        let dir = tempfile::tempdir().unwrap();
        let name = cgroup_name("p", "c");
        let files = &candidates(dir.path(), &name)[0];
        for f in [&files.cpu, &files.peak] {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        }
        std::fs::write(&files.cpu, "1000000000\n").unwrap();
        std::fs::write(&files.peak, "99999999\n").unwrap();
        std::fs::write(&files.oom, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        std::fs::create_dir_all(files.pids.parent().unwrap()).unwrap();
        std::fs::write(&files.pids, "max 61\n").unwrap();
        std::fs::write(&files.at_limit, "7\n").unwrap();
        let mut meter = Meter::start_at(dir.path(), "p", "c");
        // Samples keep the most anonymous memory seen, the subtree's.
        for rss in [50, 120, 90] {
            let stat = format!("rss 1\ntotal_rss {}\nshmem 0\n", rss << 20);
            std::fs::write(&files.stat, stat).unwrap();
            meter.sample();
        }
        std::fs::write(&files.at_limit, "19\n").unwrap();
        // The reset was written (a real cgroup then reports the new peak).
        assert!(
            std::fs::read_to_string(&files.peak)
                .unwrap()
                .starts_with("0\n")
        );
        std::fs::write(&files.cpu, "1250000000\n").unwrap();
        std::fs::write(&files.peak, "8388608\n").unwrap();
        // An earlier stage's events are not this one's.
        std::fs::write(&files.oom, "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").unwrap();
        assert_eq!(
            meter.finish(),
            Usage {
                cpu_ms: Some(250),
                memory_bytes: Some(8388608),
                anon_peak_bytes: Some(120 << 20),
                events: LimitEvents {
                    oom_kills: Some(1),
                    pids_max: Some(0),
                    memory_max: Some(12),
                },
            }
        );
    }

    #[test]
    fn measures_a_fake_v2_hierarchy_and_nothing_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path().join(cgroup_name("default", "c"));
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::write(cg.join("cpu.stat"), "usage_usec 1000\n").unwrap();
        let mut meter = Meter::start_at(dir.path(), "default", "c");
        std::fs::write(cg.join("cpu.stat"), "usage_usec 31000\n").unwrap();
        std::fs::write(cg.join("pids.events"), "max 5\n").unwrap();
        std::fs::write(cg.join("memory.stat"), "anon 4096\nfile 8192\n").unwrap();
        meter.sample();
        let u = meter.finish();
        assert_eq!(u.anon_peak_bytes, Some(4096));
        assert_eq!(u.cpu_ms, Some(30));
        assert_eq!(u.memory_bytes, None);
        // Counters missing at the start are unknown, not zero.
        assert_eq!(u.events, LimitEvents::default());
        let none = Meter::start_at(dir.path(), "default", "missing").finish();
        assert_eq!(none, Usage::default());
    }
}
