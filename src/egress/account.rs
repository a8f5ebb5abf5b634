//! One execution's ledger shared by its connections, and the switch that
//! cuts them all when its byte budget runs out.

use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::crd::EgressBudget;

use super::metrics::EgressMetrics;
use super::record::{BudgetKind, Direction, Ledger, NetworkRecord, Slot};
use super::target::Target;

/// The account of the execution running in a container.
#[derive(Debug)]
pub struct Account {
    ledger: Mutex<Ledger>,
    /// Cancelled when the byte budget runs out, or when the container's
    /// proxy closes (a child of its token).
    pub cut: CancellationToken,
}

impl Account {
    pub fn new(parent: &CancellationToken) -> Self {
        Self {
            ledger: Mutex::default(),
            cut: parent.child_token(),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // The ledger holds counters only; one a panicking writer left is
        // still worth reporting.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn record(&self) -> NetworkRecord {
        self.ledger().record()
    }

    pub fn admit(&self, budget: Option<EgressBudget>) -> Result<(), BudgetKind> {
        self.ledger().admit(budget)
    }

    pub fn deny(&self, target: &Target, reason: String) {
        self.ledger().deny(target, reason);
    }

    pub fn reached(&self, target: &Target) -> Slot {
        self.ledger().reached(target)
    }

    pub fn bytes_exceeded(&self) -> bool {
        self.ledger().budget_exceeded() == Some(BudgetKind::Bytes)
    }
}

/// Counts one admitted connection's bytes against its execution.
#[derive(Clone, Debug)]
pub struct Meter {
    pub account: Arc<Account>,
    pub slot: Slot,
    /// The budget when the connection opened.
    pub budget: Option<EgressBudget>,
    pub metrics: EgressMetrics,
    pub pool: String,
}

impl Meter {
    /// Counts `n` bytes about to pass; `false` when they would exceed the
    /// byte budget, which then cuts every connection of the execution.
    pub fn spend(&self, direction: Direction, n: usize) -> bool {
        let n = n as u64;
        let spent = self
            .account
            .ledger()
            .spend(self.slot, direction, n, self.budget);
        match spent {
            Ok(()) => {
                self.metrics.bytes(&self.pool, direction, n);
                true
            }
            Err(_) => {
                self.account.cut.cancel();
                false
            }
        }
    }
}
