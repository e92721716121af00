#include "policy.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cJSON.h"

static bool fail(char *error, size_t error_size, const char *message, const char *field) {
    snprintf(error, error_size, message, field);
    return false;
}

bool parse_config(const char *text, size_t len, limit_t *limit, char *error, size_t error_size) {
    cJSON *root = cJSON_ParseWithLength(text, len);
    bool ok = false;
    if (root == NULL) {
        fail(error, error_size, "config: not valid JSON%s", "");
        goto done;
    }
    if (!cJSON_IsObject(root)) {
        fail(error, error_size, "config: must be an object%s", "");
        goto done;
    }
    for (const cJSON *item = root->child; item != NULL; item = item->next) {
        if (strcmp(item->string, "per_minute") != 0 && strcmp(item->string, "burst") != 0) {
            fail(error, error_size, "unknown field `%s`, expected per_minute or burst", item->string);
            goto done;
        }
    }
    const cJSON *per_minute = cJSON_GetObjectItemCaseSensitive(root, "per_minute");
    if (per_minute == NULL) {
        fail(error, error_size, "per_minute: required%s", "");
        goto done;
    }
    if (!cJSON_IsNumber(per_minute) || !(per_minute->valuedouble > 0 && per_minute->valuedouble <= 1e6)) {
        fail(error, error_size, "per_minute: must be a number from 0 to 1000000%s", "");
        goto done;
    }
    const cJSON *burst = cJSON_GetObjectItemCaseSensitive(root, "burst");
    double b = burst == NULL ? 5 : burst->valuedouble;
    if ((burst != NULL && !cJSON_IsNumber(burst)) || b != floor(b) || b < 1 || b > 10000) {
        fail(error, error_size, "burst: must be an integer from 1 to 10000%s", "");
        goto done;
    }
    limit->per_minute = per_minute->valuedouble;
    limit->burst = (uint32_t)b;
    ok = true;
done:
    cJSON_Delete(root);
    return ok;
}

uint32_t retry_after_secs(uint32_t wait_ms) {
    return wait_ms / 1000 + (wait_ms % 1000 != 0);
}
