/* The guard's policy, free of the host's bindings, so that `make test` runs it natively. */
#ifndef POLICY_H
#define POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The checked configuration. */
typedef struct {
    double per_minute;
    uint32_t burst;
} limit_t;

/* Parses the guard's JSON configuration (`len` bytes, no NUL needed). On failure writes a
 * message naming the field into `error` (`error_size` bytes) and returns false. */
bool parse_config(const char *text, size_t len, limit_t *limit, char *error, size_t error_size);

/* The `Retry-After` for a client that must wait `wait_ms` milliseconds. */
uint32_t retry_after_secs(uint32_t wait_ms);

#endif
