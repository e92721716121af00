//! Which endpoints are reached, by whom and with what outcome, and how that reaches the
//! collector: the inventory, the reporter and its on-disk spool, the report wire format the
//! collector reads too, and the mergeable distinct counts reports carry.

pub mod inventory;
pub mod report;
pub mod reporter;
pub mod sketch;
pub mod spool;
