//! `unsandbox bench --profile`: where one fresh container's cost goes.
//! Containers are launched one at a time exactly as the agent launches
//! them (a copy of the shape's template, started, readied), used once (one
//! exec of the benchmark program) and destroyed (stopped, deleted); every
//! LXD call is timed. CPU time over the whole run is split between the LXD
//! daemon (with the helpers it forked and reaped: `forkstart`, `forkexec`),
//! this process (unsandbox's own work), and everything else on the host
//! (the kernel, the containers themselves, liblxc's monitors), from
//! `/proc`, in total and per step (the host's busy time and the daemon's
//! while each step ran; work a step leaves running in the background is
//! counted in the steps after it). It prints numbers; it asserts nothing.

use std::time::{Duration, Instant};

use crate::agent::launcher::{self, Placement};
use crate::crd::{ExecutorPoolSpec, NetworkTier};
use crate::execution::{RUNNER_GID, RUNNER_UID};
use crate::lxd::{ExecSpec, Lxd};

use super::bench::{BenchArgs, summarize};

/// The steps of one container's life, in order.
const STEPS: [&str; 6] = ["copy", "start", "ready", "exec", "stop", "delete"];

/// CPU ticks of the host and of two processes, read at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Ticks {
    /// Host: user (with nice), system (with irq, softirq), iowait, idle.
    user: u64,
    system: u64,
    iowait: u64,
    idle: u64,
    /// The LXD daemon: its own time and its reaped children's.
    lxd: u64,
    /// This process.
    own: u64,
}

/// `/proc/stat`'s first line: (user+nice, system+irq+softirq, iowait, idle).
pub(super) fn host_ticks(stat: &str) -> Option<(u64, u64, u64, u64)> {
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    (v.len() >= 7).then(|| (v[0] + v[1], v[2] + v[5] + v[6], v[4], v[3]))
}

/// utime+stime (and the reaped children's cutime+cstime when `children`)
/// from a `/proc/PID/stat` text. The command name may hold spaces: fields
/// are counted after its closing parenthesis.
fn process_ticks(stat: &str, children: bool) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // After the name: state(0) ... utime(11) stime(12) cutime(13) cstime(14).
    let own = f.get(11)? + f.get(12)?;
    Some(if children {
        own + f.get(13)? + f.get(14)?
    } else {
        own
    })
}

/// The host's busy and total CPU ticks (all cores) since boot, from
/// `/proc/stat`: the difference of two readings is how busy the host was.
pub(super) fn host_busy() -> (u64, u64) {
    let (user, system, iowait, idle) = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| host_ticks(&s))
        .unwrap_or_default();
    (user + system, user + system + iowait + idle)
}

fn read_ticks(lxd: Option<u32>) -> Ticks {
    let (user, system, iowait, idle) = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| host_ticks(&s))
        .unwrap_or_default();
    let of = |path: String, children: bool| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| process_ticks(&s, children))
            .unwrap_or(0)
    };
    Ticks {
        user,
        system,
        iowait,
        idle,
        lxd: lxd.map_or(0, |p| of(format!("/proc/{p}/stat"), true)),
        own: of("/proc/self/stat".into(), false),
    }
}

/// Seconds per tick (`USER_HZ`, 100 on Linux).
const TICK: f64 = 0.01;

/// Launches, uses and destroys `n` containers one at a time and prints
/// where the time went.
pub async fn measure(args: &BenchArgs, lxd: &Lxd, node: &str, n: usize) -> anyhow::Result<()> {
    let (res, _) = crate::standalone::files::load(&args.config)?;
    let image = res
        .images
        .iter()
        .find(|i| i.metadata.name.as_deref() == Some(args.image.as_str()))
        .ok_or_else(|| anyhow::anyhow!("no LanguageImage {} in {:?}", args.image, args.config))?;
    let recipes = std::path::Path::new("images");
    let fingerprint = crate::agent::image::ensure(lxd, &image.spec.source, Some(recipes)).await?;
    let spec: ExecutorPoolSpec = res
        .pools
        .iter()
        .find(|p| p.spec.image == args.image)
        .map(|p| p.spec.clone())
        .unwrap_or(serde_yaml::from_str(&format!("image: {}", args.image))?);
    let lang = image
        .spec
        .languages
        .iter()
        .find(|l| l.name == args.language)
        .ok_or_else(|| anyhow::anyhow!("{} has no language {}", args.image, args.language))?;
    let interp = lang.run.split_whitespace().next().unwrap_or("python3");
    let hash = crate::agent::desired::container_hash(&spec, &fingerprint);
    let at = Placement {
        node,
        pool_key: "bench/profile",
        storage_pool: &args.storage_pool,
        fingerprint: &fingerprint,
        hash: &hash,
        egress_socket: None,
    };
    let template = launcher::ensure_template(lxd, &spec, &at).await?;
    let ready =
        crate::execution::ready_command(&image.spec.languages, NetworkTier::Zerotrust, false);

    let pid = crate::lxd::daemon_pid();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); STEPS.len()];
    // CPU ticks per step, summed over the containers: the host's busy
    // ticks and the LXD daemon's (with its reaped helpers).
    let mut step_cpu = [(0u64, 0u64); STEPS.len()];
    let before = read_ticks(pid);
    let started = Instant::now();
    for i in 0..n {
        let name = format!("us-profile-{i}");
        let create = launcher::instance_spec(&name, &spec, &at).copied_from(&template);
        let mut step = 0;
        let mut lap = Instant::now();
        let mut last = read_ticks(pid);
        let mut mark = |times: &mut Vec<Vec<f64>>| {
            times[step].push(lap.elapsed().as_secs_f64() * 1000.0);
            let now = read_ticks(pid);
            step_cpu[step].0 += (now.user + now.system).saturating_sub(last.user + last.system);
            step_cpu[step].1 += now.lxd.saturating_sub(last.lxd);
            step += 1;
            lap = Instant::now();
            last = now;
        };
        lxd.create_instance(&create).await?;
        mark(&mut times);
        lxd.start_instance(&name).await?;
        mark(&mut times);
        let out = lxd.exec(&name, exec(ready.clone(), 0)).await?;
        anyhow::ensure!(out.exit_code == Some(0), "readiness failed: {out:?}");
        mark(&mut times);
        let command = vec![interp.to_string(), "-c".into(), args.code.clone()];
        let out = lxd.exec(&name, exec(command, RUNNER_UID)).await?;
        anyhow::ensure!(out.exit_code == Some(0), "the program failed: {out:?}");
        mark(&mut times);
        lxd.force_stop(&name).await?;
        mark(&mut times);
        lxd.destroy(&name).await?;
        mark(&mut times);
    }
    let wall = started.elapsed().as_secs_f64();
    let after = read_ticks(pid);

    println!(
        "unsandbox bench --profile: {n} containers of {} launched, used once and destroyed one at a time",
        args.image
    );
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>11} {:>9}",
        "step", "p50 ms", "p99 ms", "share", "CPU ms", "LXD ms"
    );
    let total: f64 = times.iter().map(|t| t.iter().sum::<f64>()).sum();
    let mean_ms = |ticks: u64| ticks as f64 * TICK * 1000.0 / n as f64;
    for ((name, t), (cpu, lxd_cpu)) in STEPS.iter().zip(&times).zip(step_cpu) {
        let share = t.iter().sum::<f64>() / total;
        let (p50, p99) = summarize(t.clone());
        println!(
            "{name:<10} {p50:>9.1} {p99:>9.1} {:>8.0}% {:>11.0} {:>9.0}",
            share * 100.0,
            mean_ms(cpu),
            mean_ms(lxd_cpu)
        );
    }
    println!(
        "per container: {:.0} ms wall, {:.2} containers/s one at a time",
        wall * 1000.0 / n as f64,
        n as f64 / wall
    );
    let d = |a: u64, b: u64| b.saturating_sub(a) as f64 * TICK;
    let (user, system, iowait, idle) = (
        d(before.user, after.user),
        d(before.system, after.system),
        d(before.iowait, after.iowait),
        d(before.idle, after.idle),
    );
    let (lxd_cpu, own) = (d(before.lxd, after.lxd), d(before.own, after.own));
    let busy = user + system;
    let per = |s: f64| s * 1000.0 / n as f64;
    println!(
        "CPU per container: {:.0} ms busy of {:.0} ms on all cores ({:.0} ms user, {:.0} ms kernel; {:.0} ms iowait)",
        per(busy),
        per(busy + iowait + idle),
        per(user),
        per(system),
        per(iowait)
    );
    if pid.is_some() {
        println!(
            "  LXD daemon and its reaped helpers: {:.0} ms",
            per(lxd_cpu)
        );
    } else {
        println!("  LXD daemon: not found in /proc");
    }
    println!("  unsandbox (this process):          {:.0} ms", per(own));
    println!(
        "  everything else (kernel, containers, liblxc monitors): {:.0} ms",
        per((busy - lxd_cpu - own).max(0.0))
    );
    Ok(())
}

fn exec(command: Vec<String>, uid: u32) -> ExecSpec {
    ExecSpec {
        command,
        env: [(
            "PATH".to_string(),
            "/usr/local/bin:/usr/bin:/bin".to_string(),
        )]
        .into(),
        user: uid,
        group: if uid == 0 { 0 } else { RUNNER_GID },
        cwd: "/tmp".into(),
        stdin: Vec::new(),
        output_cap: 1 << 20,
        deadline: Duration::from_secs(60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_host_and_process_ticks() {
        let stat = "cpu  100 5 40 9000 7 1 2 0 0 0\ncpu0 1 2 3 4 5 6 7\n";
        assert_eq!(host_ticks(stat), Some((105, 43, 7, 9000)));
        // A name with spaces and parentheses, then 13 fields to utime.
        let p = "42 (lxc monitor) x) S 1 42 42 0 -1 4194560 100 0 0 0 30 12 5 3 20 0 1 0";
        assert_eq!(process_ticks(p, false), Some(42));
        assert_eq!(process_ticks(p, true), Some(50));
        assert_eq!(process_ticks("1 (x) S 1", false), None);
    }
}
