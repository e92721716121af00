/* `make test`: the policy, compiled natively. */
#include <stdio.h>
#include <string.h>

#include "policy.h"

static int failures;

static void expect_error(const char *config, const char *prefix) {
    limit_t limit;
    char error[200] = "";
    if (parse_config(config, strlen(config), &limit, error, sizeof error) ||
        strncmp(error, prefix, strlen(prefix)) != 0) {
        printf("FAIL %s: got \"%s\", want \"%s...\"\n", config, error, prefix);
        failures++;
    }
}

int main(void) {
    limit_t limit;
    char error[200];
    const char *good = "{\"per_minute\": 30}";
    if (!parse_config(good, strlen(good), &limit, error, sizeof error) || limit.per_minute != 30 ||
        limit.burst != 5) {
        printf("FAIL %s: %s\n", good, error);
        failures++;
    }
    expect_error("{}", "per_minute: required");
    expect_error("{\"per_minute\": 0}", "per_minute: must be");
    expect_error("{\"per_minute\": 1, \"burst\": 0.5}", "burst: must be");
    expect_error("{\"per_minute\": 1, \"brust\": 2}", "unknown field `brust`");
    expect_error("[]", "config: must be an object");
    expect_error("{", "config: not valid JSON");
    if (retry_after_secs(1200) != 2 || retry_after_secs(1000) != 1) {
        printf("FAIL retry_after_secs\n");
        failures++;
    }
    printf("%s\n", failures ? "FAILED" : "ok");
    return failures != 0;
}
