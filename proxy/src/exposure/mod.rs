//! Which endpoints are reached, by whom and with what outcome, and how that reaches the
//! collector: the inventory, and the reporter with its on-disk spool. The report itself, with
//! the mergeable distinct counts it carries, is the crate `vigil-report`.

pub mod inventory;
pub mod reporter;
pub mod spool;
pub mod version;
