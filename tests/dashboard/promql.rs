//! Checks PromQL expressions against the exported series: each selector
//! names an exported series and matches only on its labels, each `by`
//! groups only by labels the aggregated expression carries.

use std::collections::BTreeSet;

use promql_parser::parser::{self, Expr, LabelModifier};

use super::exported::Series;

/// Labels Prometheus puts on every series of a target: its own two, and
/// `node`, which the chart's ServiceMonitor copies from the agent pod's node.
pub const TARGET_LABELS: [&str; 3] = ["job", "instance", "node"];

/// `expr` with Grafana's variables replaced as Grafana would for "All":
/// intervals become a duration, template variables match anything.
pub fn substitute(expr: &str, variables: &BTreeSet<String>) -> String {
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
pub fn check(
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
