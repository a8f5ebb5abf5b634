//! Pure validation of resource specs. The CRD schema carries the same rules for
//! the Kubernetes API server; standalone mode and the controller call these.

use std::collections::BTreeSet;

use super::{ExecutorPoolSpec, LanguageImageSpec, NetworkTier, RolloutStrategy};

/// Problems found in a spec, each naming the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct Invalid(pub Vec<String>);

fn finish(problems: Vec<String>) -> Result<(), Invalid> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Invalid(problems))
    }
}

/// Checks an ExecutorPool spec.
pub fn pool(spec: &ExecutorPoolSpec) -> Result<(), Invalid> {
    let mut p = Vec::new();
    if spec.image.trim().is_empty() {
        p.push("spec.image: must name a LanguageImage".to_string());
    }
    if spec.warm > 1000 {
        p.push(format!(
            "spec.warm: {} is above the maximum of 1000",
            spec.warm
        ));
    }
    if let Some(a) = &spec.autoscale {
        if a.min > a.max {
            p.push(format!(
                "spec.autoscale: min {} is above max {}",
                a.min, a.max
            ));
        }
        if a.max == 0 || a.max > 1000 {
            p.push(format!(
                "spec.autoscale.max: {} is not between 1 and 1000",
                a.max
            ));
        }
        if !(100..=1000).contains(&a.headroom_percent) {
            p.push(format!(
                "spec.autoscale.headroomPercent: {} is not between 100 and 1000",
                a.headroom_percent
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, o) in spec.node_overrides.iter().enumerate() {
        if o.warm > 1000 {
            p.push(format!(
                "spec.nodeOverrides[{i}].warm: {} is above the maximum of 1000",
                o.warm
            ));
        }
        if !seen.insert(o.node.as_str()) {
            p.push(format!(
                "spec.nodeOverrides[{i}].node: {} is listed twice",
                o.node
            ));
        }
    }
    if let Some(r) = &spec.reuse {
        if !(1..=10000).contains(&r.executions) {
            p.push(format!(
                "spec.reuse.executions: {} is not between 1 and 10000",
                r.executions
            ));
        }
        if r.max_age_seconds.is_some_and(|s| !(1..=86400).contains(&s)) {
            p.push("spec.reuse.maxAgeSeconds: must be between 1 and 86400".to_string());
        }
        if r.executions > 1 && spec.network != NetworkTier::Zerotrust {
            p.push(
                "spec.reuse: more than one execution per container is available only with network: zerotrust"
                    .to_string(),
            );
        }
    }
    if let Some(egress) = &spec.egress {
        if spec.network != super::NetworkTier::Semitrusted {
            p.push("spec.egress: applies only to network: semitrusted".to_string());
        }
        if egress.allow.len() > 256 {
            p.push(format!(
                "spec.egress.allow: {} entries is above the maximum of 256",
                egress.allow.len()
            ));
        }
        for (i, rule) in egress.allow.iter().enumerate() {
            if !super::egress::valid_host(&rule.host) {
                p.push(format!(
                    "spec.egress.allow[{i}].host: {:?} is not a lowercase DNS name or `*.` and one",
                    rule.host
                ));
            }
            if rule.ports.is_empty() || rule.ports.contains(&0) {
                p.push(format!(
                    "spec.egress.allow[{i}].ports: must list ports between 1 and 65535"
                ));
            }
        }
        if let Some(b) = egress.budget
            && (b.bytes == Some(0) || b.connections == Some(0))
        {
            p.push("spec.egress.budget: bytes and connections must be at least 1".to_string());
        }
    }
    if let Some(r) = &spec.rollout
        && let Some(n) = r.max_unavailable
    {
        if r.strategy != RolloutStrategy::Rolling {
            p.push("spec.rollout.maxUnavailable: applies only to strategy: Rolling".to_string());
        }
        if !(1..=1000).contains(&n) {
            p.push(format!(
                "spec.rollout.maxUnavailable: {n} is not between 1 and 1000"
            ));
        }
    }
    if spec.max_concurrent == 0 {
        p.push("spec.maxConcurrent: must be at least 1".to_string());
    }
    let l = &spec.limits;
    if !(1..=256).contains(&l.cpus) {
        p.push(format!("spec.limits.cpus: {} is outside 1..=256", l.cpus));
    }
    if !(32..=65536).contains(&l.memory_mib) {
        p.push(format!(
            "spec.limits.memoryMib: {} is outside 32..=65536",
            l.memory_mib
        ));
    }
    if !(8..=65536).contains(&l.processes) {
        p.push(format!(
            "spec.limits.processes: {} is outside 8..=65536",
            l.processes
        ));
    }
    if !(1..=65536).contains(&l.tmpfs_mib) {
        p.push(format!(
            "spec.limits.tmpfsMib: {} is outside 1..=65536",
            l.tmpfs_mib
        ));
    }
    let e = &spec.execution;
    for (name, b) in [
        ("wallTimeMs", e.wall_time_ms),
        ("outputBytes", e.output_bytes),
    ] {
        if b.default == 0 || b.max == 0 {
            p.push(format!(
                "spec.execution.{name}: default and max must be at least 1"
            ));
        }
        if b.default > b.max {
            p.push(format!(
                "spec.execution.{name}: default {} is above max {}",
                b.default, b.max
            ));
        }
    }
    if e.queue_timeout_ms > 600_000 {
        p.push(format!(
            "spec.execution.queueTimeoutMs: {} is above the maximum of 600000",
            e.queue_timeout_ms
        ));
    }
    finish(p)
}

/// Checks a LanguageImage spec.
pub fn image(spec: &LanguageImageSpec) -> Result<(), Invalid> {
    let mut p = Vec::new();
    let s = &spec.source;
    if s.alias.is_none() && s.fingerprint.is_none() && s.recipe.is_none() {
        p.push("spec.source: set alias, fingerprint or recipe".to_string());
    }
    if let Some(f) = &s.fingerprint
        && (f.len() < 12
            || f.len() > 64
            || !f
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
    {
        p.push("spec.source.fingerprint: must be 12 to 64 lowercase hex digits".to_string());
    }
    if let Some(r) = &s.recipe
        && (r.is_empty()
            || !r
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    {
        p.push(format!(
            "spec.source.recipe: {r:?} must be lowercase letters, digits and dashes"
        ));
    }
    if spec.languages.is_empty() {
        p.push("spec.languages: an image must provide at least one language".to_string());
    }
    let mut names = BTreeSet::new();
    for (i, l) in spec.languages.iter().enumerate() {
        for n in std::iter::once(&l.name).chain(&l.aliases) {
            if !names.insert(n.to_ascii_lowercase()) {
                p.push(format!(
                    "spec.languages[{i}]: name or alias {n:?} is used twice"
                ));
            }
        }
        if l.name.is_empty()
            || l.name
                .chars()
                .any(|c| c.is_whitespace() || c == '/' || c.is_ascii_uppercase())
        {
            p.push(format!(
                "spec.languages[{i}].name: {:?} must be lowercase without spaces or slashes",
                l.name
            ));
        }
        if !valid_file_name(&l.source_file) {
            p.push(format!(
                "spec.languages[{i}].sourceFile: {:?} must be a plain file name",
                l.source_file
            ));
        }
        if l.run.trim().is_empty() {
            p.push(format!("spec.languages[{i}].run: must not be empty"));
        }
        for k in l.env.keys().filter(|k| !env_name(k)) {
            p.push(format!(
                "spec.languages[{i}].env: {k:?} is not a variable name (letters, digits and underscores, not starting with a digit)"
            ));
        }
    }
    finish(p)
}

/// A name a shell can export: ASCII letters, digits and underscores, not
/// starting with a digit.
pub fn env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A plain file name: no directories, no leading dot, only safe characters.
pub fn valid_file_name(name: &str) -> bool {
    file_name_problem(name).is_none()
}

/// The longest file name accepted, in bytes (a common file system limit).
pub const MAX_FILE_NAME: usize = 255;

/// What is wrong with a file name, if anything: its length first, then its
/// characters.
pub fn file_name_problem(name: &str) -> Option<String> {
    if name.len() > MAX_FILE_NAME {
        return Some(format!(
            "is {} bytes long; the limit is {MAX_FILE_NAME}",
            name.len()
        ));
    }
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    (!plain).then(|| {
        "must be a plain file name of letters, digits, '.', '_' and '-', not starting with '.'"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ExecutorPoolSpec, LanguageImageSpec};

    fn pool_yaml(extra: &str) -> ExecutorPoolSpec {
        serde_yaml::from_str(&format!("image: small\n{extra}")).unwrap()
    }

    #[test]
    fn egress_is_for_semitrusted_pools_with_valid_names_and_ports() {
        let ok = pool_yaml(
            "network: semitrusted\negress:\n  allow: [{host: pypi.org, ports: [443]}, {host: '*.debian.org'}]\n  budget: {bytes: 1000000, connections: 8}\n",
        );
        pool(&ok).unwrap();
        assert_eq!(
            ok.egress.unwrap().allow[1].ports.len(),
            2,
            "80 and 443 by default"
        );
        pool(&pool_yaml("network: semitrusted\n")).unwrap();
        for (extra, problem) in [
            (
                "egress: {}",
                "spec.egress: applies only to network: semitrusted",
            ),
            (
                "network: semitrusted\negress: {allow: [{host: 10.0.0.1}]}",
                "spec.egress.allow[0].host: \"10.0.0.1\"",
            ),
            (
                "network: semitrusted\negress: {allow: [{host: a.org, ports: []}]}",
                "spec.egress.allow[0].ports",
            ),
            (
                "network: semitrusted\negress: {allow: [{host: a.org, ports: [0]}]}",
                "spec.egress.allow[0].ports",
            ),
            (
                "network: semitrusted\negress: {budget: {bytes: 0}}",
                "spec.egress.budget",
            ),
        ] {
            let err = pool(&pool_yaml(extra)).unwrap_err().to_string();
            assert!(err.contains(problem), "{extra}: {err}");
        }
    }

    #[test]
    fn reuse_is_bounded_and_for_zerotrust_pools() {
        let ok = pool_yaml("reuse: {executions: 50, maxAgeSeconds: 600}\n");
        pool(&ok).unwrap();
        assert!(ok.recycles());
        assert_eq!(ok.executions_per_container(), 50);
        let one = pool_yaml("network: semitrusted\nreuse: {executions: 1}\n");
        pool(&one).unwrap();
        assert!(!one.recycles() && !pool_yaml("").recycles());
        for (extra, problem) in [
            ("reuse: {executions: 0}", "spec.reuse.executions: 0"),
            (
                "reuse: {executions: 2, maxAgeSeconds: 0}",
                "spec.reuse.maxAgeSeconds",
            ),
            (
                "network: semitrusted\nreuse: {executions: 2}",
                "only with network: zerotrust",
            ),
        ] {
            let err = pool(&pool_yaml(extra)).unwrap_err().to_string();
            assert!(err.contains(problem), "{extra}: {err}");
        }
    }

    #[test]
    fn max_unavailable_is_bounded_and_for_rolling_pools() {
        pool(&pool_yaml(
            "rollout: {strategy: Rolling, maxUnavailable: 3}\n",
        ))
        .unwrap();
        pool(&pool_yaml("rollout: {strategy: OnReplenish}\n")).unwrap();
        for (extra, problem) in [
            (
                "rollout: {maxUnavailable: 2}",
                "spec.rollout.maxUnavailable: applies only to strategy: Rolling",
            ),
            (
                "rollout: {strategy: Rolling, maxUnavailable: 0}",
                "spec.rollout.maxUnavailable: 0 is not between 1 and 1000",
            ),
        ] {
            let err = pool(&pool_yaml(extra)).unwrap_err().to_string();
            assert!(err.contains(problem), "{extra}: {err}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        let spec = pool_yaml("");
        assert_eq!(spec.warm, 2);
        pool(&spec).unwrap();
    }

    #[test]
    fn default_above_max_is_rejected() {
        let spec = pool_yaml("execution:\n  wallTimeMs: {default: 9000, max: 1000}\n");
        let err = pool(&spec).unwrap_err();
        assert!(
            err.to_string()
                .contains("spec.execution.wallTimeMs: default 9000 is above max 1000"),
            "{err}"
        );
    }

    #[test]
    fn negative_count_and_unknown_tier_do_not_parse() {
        assert!(serde_yaml::from_str::<ExecutorPoolSpec>("image: a\nwarm: -1\n").is_err());
        let err =
            serde_yaml::from_str::<ExecutorPoolSpec>("image: a\nnetwork: open\n").unwrap_err();
        assert!(err.to_string().contains("unknown variant `open`"), "{err}");
    }

    #[test]
    fn out_of_range_limits_are_named() {
        let spec =
            pool_yaml("warm: 5000\nmaxConcurrent: 0\nlimits: {memoryMib: 4, processes: 2}\n");
        let err = pool(&spec).unwrap_err().0;
        assert_eq!(err.len(), 4, "{err:?}");
    }

    #[test]
    fn image_rules() {
        let ok: LanguageImageSpec = serde_yaml::from_str(
            "source: {recipe: small}\nlanguages:\n- {name: python, aliases: [py], sourceFile: main.py, run: python3 main.py}\n",
        )
        .unwrap();
        image(&ok).unwrap();
        let bad: LanguageImageSpec = serde_yaml::from_str(
            "source: {}\nlanguages:\n- {name: python, aliases: [Python], sourceFile: ../x, run: ' ', env: {A.B: x, 1A: y, _ok_1: z}}\n",
        )
        .unwrap();
        let err = image(&bad).unwrap_err().0;
        assert_eq!(err.len(), 6, "{err:?}");
        assert!(
            err.iter()
                .any(|e| e.contains("\"A.B\" is not a variable name"))
        );
    }

    #[test]
    fn file_names() {
        assert!(valid_file_name("main.py"));
        assert!(!valid_file_name("../etc/passwd"));
        assert!(!valid_file_name(".bashrc"));
        assert!(!valid_file_name("a b"));
        assert!(!valid_file_name(""));
        let long = "a".repeat(300);
        assert_eq!(
            file_name_problem(&long).unwrap(),
            "is 300 bytes long; the limit is 255"
        );
        assert!(
            file_name_problem("a b")
                .unwrap()
                .contains("plain file name")
        );
        assert!(valid_file_name(&"a".repeat(255)));
    }
}
