//! The Grafana dashboard (`charts/unsandbox/dashboards/unsandbox.json`) asks
//! only for what the project exports: every PromQL expression of every panel
//! and variable parses, names series that the agent's and the controller's
//! registries really encode (with the `_total`, `_bucket`, `_sum` and
//! `_count` suffixes of prometheus-client's OpenMetrics encoding), and
//! matches and groups only by labels those series carry or the scrape adds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use prometheus_client::registry::Registry;
use promql_parser::parser::{self, Expr, LabelModifier};
use serde_json::Value;

use unsandbox::controller::ControllerMetrics;
use unsandbox::metrics::{ExecLabels, Metrics, PoolLabels, ResultLabels, RouteLabels};

const DASHBOARD: &str = "charts/unsandbox/dashboards/unsandbox.json";
const SERVICE_MONITOR: &str = "charts/unsandbox/templates/servicemonitor.yaml";

/// Labels Prometheus puts on every series of a target: its own two, and
/// `node`, which the chart's ServiceMonitor copies from the agent pod's node.
const TARGET_LABELS: [&str; 3] = ["job", "instance", "node"];

/// Series the dashboard must show (issue: executions, latency, queue wait,
/// containers by state, launches, smoke status, controller reconcile errors).
const REQUIRED: [&str; 7] = [
    "unsandbox_api_executions_total",
    "unsandbox_api_execution_seconds_bucket",
    "unsandbox_api_queue_seconds_bucket",
    "unsandbox_agent_containers",
    "unsandbox_agent_launches_total",
    "unsandbox_agent_languages",
    "unsandbox_controller_reconcile_failures_total",
];

/// Exported series: name to its label names, `None` where the family had no
/// sample in the encoding (its labels are then unknown).
type Series = BTreeMap<String, Option<BTreeSet<String>>>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

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
fn exported() -> Series {
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

/// `expr` with Grafana's variables replaced as Grafana would for "All":
/// intervals become a duration, template variables match anything.
fn substitute(expr: &str, variables: &BTreeSet<String>) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').expect("unclosed ${");
                (&braced[..end], end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match name {
            "__rate_interval" | "__interval" | "__range" => out.push_str("5m"),
            v if variables.contains(v) => out.push_str(".*"),
            other => panic!("unknown variable ${other} in {expr}"),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// Checks one parsed expression against the exported series: names, label
/// matchers, grouping labels. Returns the labels its result may carry and
/// adds what is wrong to `problems`; `used` gets the series it reads.
fn check(
    expr: &Expr,
    exported: &Series,
    used: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) -> BTreeSet<String> {
    let mut go = |e: &Expr| check(e, exported, used, problems);
    match expr {
        Expr::VectorSelector(vs) => selector(vs, exported, used, problems),
        Expr::MatrixSelector(ms) => selector(&ms.vs, exported, used, problems),
        Expr::Paren(p) => go(&p.expr),
        Expr::Unary(u) => go(&u.expr),
        Expr::Subquery(s) => go(&s.expr),
        Expr::Binary(b) => {
            let mut labels = go(&b.lhs);
            labels.extend(go(&b.rhs));
            labels
        }
        Expr::Call(call) => {
            let mut labels = BTreeSet::new();
            for arg in &call.args.args {
                labels.extend(go(arg));
            }
            if call.func.name == "histogram_quantile" {
                labels.remove("le");
            }
            labels
        }
        Expr::Aggregate(agg) => {
            if let Some(param) = &agg.param {
                check(param, exported, used, problems);
            }
            let inner = check(&agg.expr, exported, used, problems);
            match &agg.modifier {
                None => BTreeSet::new(),
                Some(m) => {
                    let named: BTreeSet<String> = m.labels().labels.iter().cloned().collect();
                    for l in &named {
                        if !inner.contains(l) && !TARGET_LABELS.contains(&l.as_str()) {
                            problems.push(format!("groups by {l}, which {} lacks", agg.expr));
                        }
                    }
                    match m {
                        LabelModifier::Include(_) => named,
                        LabelModifier::Exclude(_) => &inner - &named,
                    }
                }
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => BTreeSet::new(),
    }
}

/// One selector: its series must be exported, its matchers must name labels
/// the series has. Returns those labels.
fn selector(
    vs: &parser::VectorSelector,
    exported: &Series,
    used: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) -> BTreeSet<String> {
    let by_name = vs.matchers.matchers.iter().find(|m| m.name == "__name__");
    let Some(name) = vs.name.clone().or_else(|| by_name.map(|m| m.value.clone())) else {
        problems.push(format!("{vs} names no metric"));
        return BTreeSet::new();
    };
    used.insert(name.clone());
    let Some(labels) = exported.get(&name) else {
        problems.push(format!("{name} is not exported"));
        return BTreeSet::new();
    };
    let Some(labels) = labels else {
        problems.push(format!("{name} had no sample: touch it in encoded()"));
        return BTreeSet::new();
    };
    let matchers = vs
        .matchers
        .matchers
        .iter()
        .chain(vs.matchers.or_matchers.iter().flatten());
    for m in matchers.filter(|m| m.name != "__name__") {
        if !labels.contains(&m.name) && !TARGET_LABELS.contains(&m.name.as_str()) {
            problems.push(format!("{vs} matches on {}, which {name} lacks", m.name));
        }
    }
    labels
        .iter()
        .cloned()
        .chain(TARGET_LABELS.map(String::from))
        .collect()
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(root().join(DASHBOARD)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// One PromQL expression of the dashboard: where it is, and for a
/// `label_values(SELECTOR, LABEL)` variable the label its series must carry.
struct Query {
    place: String,
    expr: String,
    label: Option<String>,
}

/// Every PromQL expression of the dashboard: panels' targets (`expr`, at any
/// depth, rows included) and the selectors of the variables' queries.
fn queries(dash: &Value) -> Vec<Query> {
    fn walk(v: &Value, title: &str, out: &mut Vec<Query>) {
        match v {
            Value::Object(o) => {
                let title = o.get("title").and_then(Value::as_str).unwrap_or(title);
                if let Some(Value::String(expr)) = o.get("expr") {
                    let (place, expr) = (format!("panel {title:?}"), expr.clone());
                    out.push(Query {
                        place,
                        expr,
                        label: None,
                    });
                }
                o.values().for_each(|c| walk(c, title, out));
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, title, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], "", &mut out);
    for var in dash["templating"]["list"].as_array().unwrap() {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .unwrap();
        let args = q
            .strip_prefix("label_values(")
            .and_then(|a| a.strip_suffix(')'))
            .unwrap_or_else(|| {
                panic!("variable query {q}: only label_values(SELECTOR, LABEL) is checked")
            });
        let (selector, label) = args
            .rsplit_once(',')
            .expect("label_values without a selector");
        out.push(Query {
            place: format!("variable {}", var["name"]),
            expr: selector.to_string(),
            label: Some(label.trim().to_string()),
        });
    }
    out
}

#[test]
fn every_dashboard_query_names_exported_series_and_their_labels() {
    let exported = exported();
    let dash = dashboard();
    let variables: BTreeSet<String> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    let queries = queries(&dash);
    assert!(
        queries.len() >= REQUIRED.len(),
        "only {} queries",
        queries.len()
    );
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for q in &queries {
        let promql = substitute(&q.expr, &variables);
        match parser::parse(&promql) {
            Ok(ast) => {
                let mut found = Vec::new();
                let labels = check(&ast, &exported, &mut used, &mut found);
                if let Some(label) = q.label.as_ref().filter(|l| !labels.contains(*l)) {
                    found.push(format!("{promql} has no label {label}"));
                }
                problems.extend(found.into_iter().map(|p| format!("{}: {p}", q.place)));
            }
            Err(e) => problems.push(format!("{}: {promql}: {e}", q.place)),
        }
    }
    for name in REQUIRED {
        if !used.contains(name) {
            problems.push(format!("no panel shows {name}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_panel_has_queries_and_reads_the_chosen_prometheus() {
    let dash = dashboard();
    let mut panels: Vec<&Value> = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    let mut titles = BTreeSet::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap();
        assert!(titles.insert(title), "two panels are titled {title}");
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets.iter().chain([*p]) {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {title}");
        }
    }
    // The `node` label the queries rely on is the ServiceMonitor's doing.
    let monitor = std::fs::read_to_string(root().join(SERVICE_MONITOR)).unwrap();
    assert!(
        monitor.contains("targetLabel: node"),
        "{SERVICE_MONITOR} no longer sets node"
    );
}

#[test]
fn a_query_on_a_missing_series_or_label_is_caught() {
    let exported = exported();
    let vars = BTreeSet::from(["pool".to_string()]);
    let wrong = [
        "rate(unsandbox_api_executions[5m])",
        "unsandbox_api_execution_seconds",
        "sum by (lang) (rate(unsandbox_api_executions_total[$__rate_interval]))",
        r#"unsandbox_agent_containers{pools=~"$pool"}"#,
    ];
    for expr in wrong {
        let ast = parser::parse(&substitute(expr, &vars)).unwrap();
        let mut problems = Vec::new();
        check(&ast, &exported, &mut BTreeSet::new(), &mut problems);
        assert!(!problems.is_empty(), "{expr} passed");
    }
    let right = r#"histogram_quantile(0.9, sum by (le, node) (rate(unsandbox_api_queue_seconds_bucket{pool=~"$pool"}[5m])))"#;
    let mut problems = Vec::new();
    let ast = parser::parse(&substitute(right, &vars)).unwrap();
    check(&ast, &exported, &mut BTreeSet::new(), &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
}
