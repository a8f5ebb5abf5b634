//! `unsandbox bench --scale N`: one pool of N warm containers on this host,
//! and what that size costs: host memory per warm container (LXD's monitors
//! counted, as the host sees them), the agent's own memory, the time to
//! fill, the latency of an LXD listing and of an exec among N instances,
//! the reconcile time with a full listing, and acquire latency. It prints
//! numbers; it asserts nothing.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::agent::Agent;
use crate::execution::{RUNNER_GID, RUNNER_UID};
use crate::lxd::{ExecSpec, Lxd};

use super::bench::{BenchArgs, summarize, wait_warm};
use crate::agent::driver::pressure::kib_field as meminfo_kib;

const SAMPLES: usize = 10;

/// (MemAvailable, MemFree) of the host in MiB.
fn host_memory() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mib = |k| meminfo_kib(&text, k).unwrap_or(0) as f64 / 1024.0;
    (mib("MemAvailable"), mib("MemFree"))
}

/// This process's resident memory in MiB.
fn own_rss() -> f64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    meminfo_kib(&text, "VmRSS").unwrap_or(0) as f64 / 1024.0
}

/// Milliseconds each run of `f` took.
async fn timed<F, Fut, T>(n: usize, mut f: F) -> anyhow::Result<Vec<f64>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await?;
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(v)
}

/// Fills the pool (`agent` serves it, `warm` containers) and measures.
pub async fn measure(args: &BenchArgs, agent: &Agent, lxd: &Lxd, warm: u32) -> anyhow::Result<()> {
    let (avail_before, free_before) = host_memory();
    let rss_before = own_rss();
    let fill = wait_warm(agent, warm, Duration::from_secs(3 * 3600))
        .await
        .context("filling the pool")?;
    agent.settle(Duration::from_secs(120)).await;
    let (avail_after, free_after) = host_memory();
    let rss_after = own_rss();
    let instances = lxd.instances().await?.len();

    let listing = timed(SAMPLES, || async { Ok(lxd.instances().await?.len()) }).await?;
    let reconcile = timed(SAMPLES, || async { Ok(agent.reconcile(true).await) }).await?;

    // An exec among N instances, in a container held out of the pool for
    // it (the lease destroys it afterwards).
    let lease = agent
        .acquire("bench/bench", Instant::now() + Duration::from_secs(60))
        .await?;
    let exec = timed(SAMPLES, || async {
        let spec = ExecSpec {
            command: vec!["true".into()],
            env: Default::default(),
            user: RUNNER_UID,
            group: RUNNER_GID,
            cwd: "/tmp".into(),
            stdin: vec![],
            output_cap: 1024,
            deadline: Duration::from_secs(30),
        };
        Ok(lxd.exec(&lease.container, spec).await?)
    })
    .await?;
    drop(lease);

    // Taking a container (its replacement launches meanwhile).
    wait_warm(agent, warm, Duration::from_secs(600)).await?;
    let acquire = timed(SAMPLES, || async {
        let lease = agent
            .acquire("bench/bench", Instant::now() + Duration::from_secs(60))
            .await?;
        drop(lease);
        Ok(())
    })
    .await?;

    let per = |before: f64, after: f64| (before - after) / f64::from(warm);
    println!(
        "unsandbox bench --scale: {warm} warm containers of {} ({instances} instances in the project)",
        args.image
    );
    println!(
        "fill: {:.0} s ({:.2} containers/s, {} launches at a time)",
        fill.as_secs_f64(),
        f64::from(warm) / fill.as_secs_f64(),
        args.launch_parallelism
    );
    println!(
        "host memory per warm container: {:.2} MiB not available (MemAvailable), {:.2} MiB not free (MemFree, page cache counted)",
        per(avail_before, avail_after),
        per(free_before, free_after)
    );
    println!(
        "host MemAvailable left: {avail_after:.0} MiB; the agent's (this process's) resident memory: {rss_after:.1} MiB (was {rss_before:.1} MiB)"
    );
    println!("{:<40} {:>9} {:>9}", "", "p50 ms", "p99 ms");
    for (what, v) in [
        ("LXD list (all instances)", listing),
        ("reconcile with a full listing", reconcile),
        ("LXD exec `true` among them", exec),
        ("acquire (a warm container taken)", acquire),
    ] {
        let (p50, p99) = summarize(v);
        println!("{what:<40} {p50:>9.1} {p99:>9.1}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo_fields() {
        let text = "MemTotal:       24684092 kB\nMemFree:        20713196 kB\nMemAvailable:   22000000 kB\nVmRSS:\t   1234 kB\n";
        assert_eq!(meminfo_kib(text, "MemFree"), Some(20713196));
        assert_eq!(meminfo_kib(text, "MemAvailable"), Some(22000000));
        assert_eq!(meminfo_kib(text, "VmRSS"), Some(1234));
        assert_eq!(meminfo_kib(text, "Mem"), None);
    }
}
