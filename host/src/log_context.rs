//! The request that the log lines written during a guard call are about. The proxy names it
//! around its calls into the chain; every line a guard writes (its `log` calls, its output, its
//! faults, a monitor-mode denial) then carries the request id, client and route, so that an
//! operator can find the request the line belongs to.
//!
//! Held per thread: guard calls run to completion on the thread that makes them, and the
//! buffers are reused, so naming a request costs a few short copies and no allocation.

use std::cell::RefCell;

/// The fields each guard log line carries.
#[derive(Default)]
pub(crate) struct RequestFields {
    /// The request id, or empty outside [`about`].
    pub(crate) request_id: String,
    /// The client key.
    pub(crate) client: String,
    /// The route template.
    pub(crate) route: String,
}

thread_local! {
    static CURRENT: RefCell<RequestFields> = RefCell::new(RequestFields::default());
}

/// Runs `f` with the guard log lines it causes carrying `request_id`, `client` and `route`.
pub fn about<R>(request_id: &str, client: &str, route: &str, f: impl FnOnce() -> R) -> R {
    CURRENT.with(|current| {
        let fields = &mut *current.borrow_mut();
        for (field, value) in [
            (&mut fields.request_id, request_id),
            (&mut fields.client, client),
            (&mut fields.route, route),
        ] {
            field.clear();
            field.push_str(value);
        }
    });
    let result = f();
    CURRENT.with(|current| current.borrow_mut().request_id.clear());
    result
}

/// Calls `log` with the fields of the request being served on this thread ("-" for each
/// outside [`about`]).
pub(crate) fn with<R>(log: impl FnOnce(&str, &str, &str) -> R) -> R {
    CURRENT.with(|current| {
        let fields = current.borrow();
        if fields.request_id.is_empty() {
            log("-", "-", "-")
        } else {
            log(&fields.request_id, &fields.client, &fields.route)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_the_request_named_and_none_after() {
        let seen = about("r1", "alice", "/users/{id}", || {
            with(|id, client, route| format!("{id} {client} {route}"))
        });
        assert_eq!(seen, "r1 alice /users/{id}");
        assert_eq!(
            with(|id, client, route| format!("{id} {client} {route}")),
            "- - -"
        );
    }
}
