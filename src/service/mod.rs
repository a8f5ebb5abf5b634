//! The execution service: what every API calls to run a request. It checks
//! the request against the pool and the caller's quota (`request`, pure),
//! then chooses a pool, takes a warm container, runs the stages, retries
//! once when the answer was lost, and records the metrics (`executions`).
//! Errors are the domain's; each API turns them into its own answers.

mod executions;
pub mod request;

pub use executions::{ExecError, Executions, Ran};
pub use request::{Asked, File, Invalid, Limit, MIN_MEMORY_MIB, Memory, Request, Unit};
#[cfg(test)]
pub use request::{MIB, Plan};
