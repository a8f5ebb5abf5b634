//! What one execution's connections did, and its budget: the ledger the
//! proxy writes as traffic flows, and the record the API returns as
//! `network`. Pure: the proxy holds the ledger under a lock.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::crd::EgressBudget;

use super::target::Target;

/// Distinct host and port pairs listed in `reached`.
pub const MAX_REACHED: usize = 64;
/// Distinct refusals listed in `denied`.
pub const MAX_DENIED: usize = 32;

/// The network use of one execution:
///
/// ```json
/// {"reached": [{"host": "allowed.test", "port": 443, "connections": 2,
///               "bytes_sent": 123, "bytes_received": 456}],
///  "denied": [{"host": "denied.test", "port": 443,
///              "reason": "not in this pool's allowlist"}],
///  "budget_exceeded": null}
/// ```
///
/// `reached` and `denied` are in first-seen order and always present.
/// Bytes are payload: tunnel bytes, and HTTP message bodies of forwarded
/// requests. `reached_omitted` and `denied_omitted` appear only when the
/// lists are full.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, utoipa::ToSchema)]
#[serde(default)]
pub struct NetworkRecord {
    /// Hosts connected to (at most [`MAX_REACHED`]).
    pub reached: Vec<Reached>,
    /// Connections to hosts beyond the first [`MAX_REACHED`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reached_omitted: u64,
    /// Requests refused or failed, one entry per host, port and reason
    /// (at most [`MAX_DENIED`]). Requests a forward proxy cannot serve
    /// at all (no host, `https://` without `CONNECT`) are counted in the
    /// metrics only.
    pub denied: Vec<Denied>,
    /// Refusals beyond the first [`MAX_DENIED`] distinct ones.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub denied_omitted: u64,
    /// The budget that ran out first, if one did.
    pub budget_exceeded: Option<BudgetKind>,
}

/// One host and port the execution connected to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, utoipa::ToSchema)]
pub struct Reached {
    /// The name asked for (lowercase, no trailing dot).
    pub host: String,
    pub port: u16,
    /// Tunnels and forwarded requests.
    pub connections: u64,
    /// From the program to the host.
    pub bytes_sent: u64,
    /// From the host to the program.
    pub bytes_received: u64,
}

/// A request the proxy did not serve.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, utoipa::ToSchema)]
pub struct Denied {
    /// The host asked for (lowercase, no trailing dot): a name, or an IP
    /// literal.
    pub host: String,
    pub port: u16,
    /// Why, after the host: `not in this pool's allowlist`, `resolves to
    /// 10.0.0.5, a private address`, `byte budget exceeded`, ...
    pub reason: String,
}

/// Which budget of `spec.egress.budget` ran out.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKind {
    Bytes,
    Connections,
}

impl fmt::Display for BudgetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bytes => "byte",
            Self::Connections => "connection",
        })
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Which way bytes flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the program.
    Sent,
    /// To the program.
    Received,
}

/// Where a connection's bytes are listed: an index into `reached`, or
/// nowhere once the list is full.
pub type Slot = Option<usize>;

/// The running account of one execution.
#[derive(Debug, Default)]
pub struct Ledger {
    record: NetworkRecord,
    connections: u64,
    bytes: u64,
}

impl Ledger {
    /// What the execution did so far.
    pub fn record(&self) -> NetworkRecord {
        self.record.clone()
    }

    /// The budget that ran out first, if one did.
    pub fn budget_exceeded(&self) -> Option<BudgetKind> {
        self.record.budget_exceeded
    }

    /// Counts a connection about to be opened (an attempt counts, even
    /// when the host then does not answer), or refuses it: the connection
    /// budget is used up, or the byte budget is.
    pub fn admit(&mut self, budget: Option<EgressBudget>) -> Result<(), BudgetKind> {
        let budget = budget.unwrap_or_default();
        if budget.bytes.is_some_and(|limit| self.bytes >= limit)
            || self.record.budget_exceeded == Some(BudgetKind::Bytes)
        {
            return Err(self.exceed(BudgetKind::Bytes));
        }
        if budget
            .connections
            .is_some_and(|limit| self.connections >= u64::from(limit))
        {
            return Err(self.exceed(BudgetKind::Connections));
        }
        self.connections += 1;
        Ok(())
    }

    /// Lists a connection that was opened to `target`.
    pub fn reached(&mut self, target: &Target) -> Slot {
        let reached = &mut self.record.reached;
        if let Some(i) = reached
            .iter()
            .position(|r| r.host == target.host && r.port == target.port)
        {
            reached[i].connections += 1;
            return Some(i);
        }
        if reached.len() >= MAX_REACHED {
            self.record.reached_omitted += 1;
            return None;
        }
        reached.push(Reached {
            host: target.host.clone(),
            port: target.port,
            connections: 1,
            bytes_sent: 0,
            bytes_received: 0,
        });
        Some(reached.len() - 1)
    }

    /// Lists a refusal (once per target and reason).
    pub fn deny(&mut self, target: &Target, reason: String) {
        let denied = &mut self.record.denied;
        if denied
            .iter()
            .any(|d| d.host == target.host && d.port == target.port && d.reason == reason)
        {
            return;
        }
        if denied.len() >= MAX_DENIED {
            self.record.denied_omitted += 1;
            return;
        }
        denied.push(Denied {
            host: target.host.clone(),
            port: target.port,
            reason,
        });
    }

    /// Counts `n` bytes about to pass, or refuses them when they would
    /// take the execution over its byte budget: then nothing more passes.
    pub fn spend(
        &mut self,
        slot: Slot,
        direction: Direction,
        n: u64,
        budget: Option<EgressBudget>,
    ) -> Result<(), BudgetKind> {
        let limit = budget.and_then(|b| b.bytes);
        if self.record.budget_exceeded == Some(BudgetKind::Bytes)
            || limit.is_some_and(|limit| self.bytes + n > limit)
        {
            return Err(self.exceed(BudgetKind::Bytes));
        }
        self.bytes += n;
        if let Some(r) = slot.and_then(|i| self.record.reached.get_mut(i)) {
            match direction {
                Direction::Sent => r.bytes_sent += n,
                Direction::Received => r.bytes_received += n,
            }
        }
        Ok(())
    }

    /// Notes that `kind` ran out (the first budget to run out stays).
    fn exceed(&mut self, kind: BudgetKind) -> BudgetKind {
        self.record.budget_exceeded.get_or_insert(kind);
        kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(host: &str, port: u16) -> Target {
        Target {
            host: host.into(),
            port,
        }
    }

    fn budget(bytes: Option<u64>, connections: Option<u32>) -> Option<EgressBudget> {
        Some(EgressBudget { bytes, connections })
    }

    #[test]
    fn reached_hosts_add_up_in_first_seen_order() {
        let mut l = Ledger::default();
        let b = budget(None, None);
        l.admit(b).unwrap();
        let a = l.reached(&t("a.test", 443));
        l.admit(b).unwrap();
        let z = l.reached(&t("z.test", 80));
        l.admit(b).unwrap();
        assert_eq!(l.reached(&t("a.test", 443)), a);
        l.spend(a, Direction::Sent, 10, b).unwrap();
        l.spend(a, Direction::Received, 20, b).unwrap();
        l.spend(z, Direction::Received, 5, b).unwrap();
        let json = serde_json::to_value(l.record()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "reached": [
                    {"host": "a.test", "port": 443, "connections": 2, "bytes_sent": 10, "bytes_received": 20},
                    {"host": "z.test", "port": 80, "connections": 1, "bytes_sent": 0, "bytes_received": 5},
                ],
                "denied": [],
                "budget_exceeded": null,
            })
        );
    }

    #[test]
    fn denials_are_listed_once_and_capped() {
        let mut l = Ledger::default();
        l.deny(&t("d.test", 443), "not in this pool's allowlist".into());
        l.deny(&t("d.test", 443), "not in this pool's allowlist".into());
        l.deny(&t("d.test", 80), "not in this pool's allowlist".into());
        assert_eq!(l.record().denied.len(), 2);
        for i in 0..MAX_DENIED + 5 {
            l.deny(&t(&format!("h{i}.test"), 443), "x".into());
        }
        let r = l.record();
        assert_eq!(r.denied.len(), MAX_DENIED);
        assert_eq!(r.denied_omitted, 7);
        assert_eq!(r.denied[0].host, "d.test");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["denied_omitted"], 7);
        assert!(json.get("reached_omitted").is_none());
    }

    #[test]
    fn reached_is_capped_and_omitted_connections_still_spend() {
        let mut l = Ledger::default();
        let b = budget(Some(10 * (MAX_REACHED as u64 + 1) + 5), None);
        for i in 0..MAX_REACHED + 1 {
            l.admit(b).unwrap();
            let slot = l.reached(&t(&format!("h{i}.test"), 443));
            assert_eq!(slot.is_some(), i < MAX_REACHED);
            l.spend(slot, Direction::Sent, 10, b).unwrap();
        }
        let r = l.record();
        assert_eq!(r.reached.len(), MAX_REACHED);
        assert_eq!(r.reached_omitted, 1);
        assert_eq!(
            l.spend(None, Direction::Sent, 10, b),
            Err(BudgetKind::Bytes),
            "the unlisted connection's bytes counted"
        );
    }

    #[test]
    fn the_byte_budget_lets_nothing_over_it_pass() {
        let mut l = Ledger::default();
        let b = budget(Some(100), None);
        l.admit(b).unwrap();
        let s = l.reached(&t("a.test", 443));
        l.spend(s, Direction::Sent, 60, b).unwrap();
        l.spend(s, Direction::Received, 40, b).unwrap();
        assert_eq!(l.spend(s, Direction::Sent, 1, b), Err(BudgetKind::Bytes));
        assert_eq!(
            l.spend(s, Direction::Sent, 0, b),
            Err(BudgetKind::Bytes),
            "cut stays cut"
        );
        assert_eq!(l.admit(b), Err(BudgetKind::Bytes));
        let r = l.record();
        assert_eq!(
            (r.reached[0].bytes_sent, r.reached[0].bytes_received),
            (60, 40)
        );
        assert_eq!(r.budget_exceeded, Some(BudgetKind::Bytes));
    }

    #[test]
    fn the_connection_budget_counts_admitted_connections() {
        let mut l = Ledger::default();
        let b = budget(None, Some(2));
        l.admit(b).unwrap();
        l.admit(b).unwrap();
        assert_eq!(l.admit(b), Err(BudgetKind::Connections));
        assert_eq!(l.record().budget_exceeded, Some(BudgetKind::Connections));
        assert_eq!(
            l.spend(None, Direction::Sent, 1_000_000, b),
            Ok(()),
            "bytes still flow on open connections"
        );
        assert_eq!(
            l.admit(budget(Some(10), Some(5))),
            Err(BudgetKind::Bytes),
            "a policy change applies to the next connection"
        );
        assert_eq!(
            l.record().budget_exceeded,
            Some(BudgetKind::Connections),
            "the first budget to run out stays"
        );
        assert!(Ledger::default().admit(None).is_ok(), "no budget, no limit");
    }
}
