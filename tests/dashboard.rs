//! The Grafana dashboard (`charts/unsandbox/dashboards/unsandbox.json`) asks
//! only for what the project exports: every PromQL expression of every panel
//! and variable parses, names series that the agent's and the controller's
//! registries really encode (with the `_total`, `_bucket`, `_sum` and
//! `_count` suffixes of prometheus-client's OpenMetrics encoding), and
//! matches and groups only by labels those series carry or the scrape adds.

#[path = "dashboard/exported.rs"]
mod exported;
#[path = "dashboard/promql.rs"]
mod promql;

use std::collections::BTreeSet;
use std::path::PathBuf;

use promql_parser::parser;
use serde_json::Value;

use exported::exported;
use promql::{check, substitute};

const DASHBOARD: &str = "charts/unsandbox/dashboards/unsandbox.json";
const SERVICE_MONITOR: &str = "charts/unsandbox/templates/servicemonitor.yaml";

/// Series the dashboard must show: executions, latency, queue wait,
/// containers by state, launches, smoke status, controller reconcile errors.
const REQUIRED: [&str; 7] = [
    "unsandbox_api_executions_total",
    "unsandbox_api_execution_seconds_bucket",
    "unsandbox_api_queue_seconds_bucket",
    "unsandbox_agent_containers",
    "unsandbox_agent_launches_total",
    "unsandbox_agent_languages",
    "unsandbox_controller_reconcile_failures_total",
];
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
