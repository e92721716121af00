/* {{name}}: a Vigil guard. It limits each client to `per_minute` requests (bursts of up to
 * `burst`) with the host's rate limiter, and refuses the rest with 429 and `Retry-After`.
 *
 * Implements the exports gen/guard.h declares (generated from wit/guard.wit by `make`).
 * Arguments belong to the callee: free them; strings are {ptr, len} without a NUL. */
#include <stdio.h>

#include "guard.h"
#include "policy.h"

/* An instance serves many requests of many clients: only the configuration lives here (init
 * runs on every fresh instance), per-client data lives in the host's state. */
static limit_t limit;

bool exports_guard_init(guard_string_t *config, guard_string_t *err) {
    char error[200];
    bool ok = parse_config((const char *)config->ptr, config->len, &limit, error, sizeof error);
    if (ok) {
        /* Only the client's key is read: no header field needs copying into the guard. */
        guard_list_string_t none = {.ptr = NULL, .len = 0};
        vigil_guard_state_reads_headers(&none);
    } else {
        guard_string_dup(err, error);
    }
    guard_string_free(config);
    return ok;
}

void exports_guard_on_request(guard_request_t *req, guard_verdict_t *ret) {
    uint32_t wait_ms;
    if (vigil_guard_state_rate(&req->client.key, limit.per_minute / 60, limit.burst, &wait_ms)) {
        ret->tag = VIGIL_GUARD_TYPES_VERDICT_ALLOW;
    } else {
        char reason[80];
        snprintf(reason, sizeof reason, "more than %g requests a minute", limit.per_minute);
        ret->tag = VIGIL_GUARD_TYPES_VERDICT_DENY;
        ret->val.deny.status = 429;
        guard_string_dup(&ret->val.deny.reason, reason); /* freed by the bindings */
        ret->val.deny.retry_after_secs.is_some = true;
        ret->val.deny.retry_after_secs.val = retry_after_secs(wait_ms);
    }
    guard_request_free(req);
}

void exports_guard_on_response(guard_request_t *req, guard_response_t *resp) {
    guard_request_free(req);
    guard_response_free(resp);
}
