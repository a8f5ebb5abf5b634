//! What the agent's and the controller's registries export: every series
//! name with the `_total`, `_bucket`, `_sum` and `_count` suffixes of
//! prometheus-client's OpenMetrics encoding, and the labels of its samples.

use std::collections::{BTreeMap, BTreeSet};

use prometheus_client::registry::Registry;

use unsandbox::controller::ControllerMetrics;
use unsandbox::metrics::{ExecLabels, Metrics, PoolLabels, ResultLabels, RouteLabels};

/// Exported series: name to its label names, `None` where the family had no
/// sample in the encoding (its labels are then unknown).
pub type Series = BTreeMap<String, Option<BTreeSet<String>>>;

/// The agent's and the controller's registries, each metric touched once,
/// as they encode for `/metrics`.
fn encoded() -> Vec<String> {
    let m = Metrics::new();
    let pool = || "default/small".to_string();
    let exec = ExecLabels {
        language: "python".into(),
        pool: pool(),
        status: "ok".into(),
    };
    m.executions.get_or_create(&exec).inc();
    m.execution_seconds
        .get_or_create(&PoolLabels { pool: pool() })
        .observe(0.1);
    m.queue_seconds
        .get_or_create(&PoolLabels { pool: pool() })
        .observe(0.0);
    let route = RouteLabels {
        route: "execute".into(),
        code: "404".into(),
    };
    m.rejected.get_or_create(&route).inc();
    m.set_containers(&pool(), "warm", 2);
    m.warm_target
        .get_or_create(&PoolLabels { pool: pool() })
        .set(2);
    m.set_languages(&pool(), "served", 3);
    let ok = ResultLabels {
        pool: pool(),
        result: "ok".into(),
    };
    m.launches.get_or_create(&ok).inc();
    m.launch_seconds
        .get_or_create(&PoolLabels { pool: pool() })
        .observe(0.7);
    m.destroys.get_or_create(&ok).inc();
    m.reconcile_seconds.observe(0.01);

    // As `unsandbox controller` builds its registry.
    let mut registry = Registry::with_prefix("unsandbox");
    let c = ControllerMetrics::register(&mut registry);
    c.reconcile_seconds.observe(0.02);
    c.failures
        .get_or_create(&vec![("error".into(), "kube".into())])
        .inc();
    c.leader.leader.set(1);
    c.leader.transitions.inc();
    let mut controller = String::new();
    prometheus_client::encoding::text::encode(&mut controller, &registry).unwrap();
    vec![m.render(), controller]
}

/// The series an OpenMetrics family of `kind` is sampled as.
fn series_of(family: &str, kind: &str) -> Vec<String> {
    let suffixes: &[&str] = match kind {
        "counter" => &["_total"],
        "gauge" | "unknown" => &[""],
        "histogram" => &["_bucket", "_sum", "_count"],
        "info" => &["_info"],
        other => panic!("{family}: no rule for OpenMetrics type {other}"),
    };
    suffixes.iter().map(|s| format!("{family}{s}")).collect()
}

/// A sample line's series name and label names.
fn sample(line: &str) -> (String, BTreeSet<String>) {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..end].to_string();
    let mut labels = BTreeSet::new();
    if line[end..].starts_with('{') {
        let mut rest = &line[end + 1..];
        while let Some(eq) = rest.find("=\"") {
            labels.insert(rest[..eq].trim_start_matches(',').to_string());
            // Skip the quoted value, escapes included.
            let value = &rest[eq + 2..];
            let mut escaped = false;
            let close = value
                .char_indices()
                .find(|&(_, ch)| {
                    let done = ch == '"' && !escaped;
                    escaped = ch == '\\' && !escaped;
                    done
                })
                .map(|(i, _)| i)
                .unwrap_or_else(|| panic!("unterminated label value: {line}"));
            rest = &value[close + 1..];
            if rest.starts_with('}') {
                break;
            }
        }
    }
    (name, labels)
}

/// Every series the registries export, from their `# TYPE` lines, with the
/// labels their samples carry. Fails when a sample's name is not what the
/// suffix rule predicts, so the rule is checked against the real encoder.
pub fn exported() -> Series {
    let mut series = Series::new();
    let mut samples = Vec::new();
    for text in encoded() {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (family, kind) = rest.split_once(' ').unwrap();
                for s in series_of(family, kind) {
                    series.insert(s, None);
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                samples.push(sample(line));
            }
        }
    }
    for (name, labels) in samples {
        let entry = series
            .get_mut(&name)
            .unwrap_or_else(|| panic!("sample {name} is not what its # TYPE line predicts"));
        entry.get_or_insert_with(BTreeSet::new).extend(labels);
    }
    series
}
