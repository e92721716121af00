/*
 * path-guard: refuses path traversal, NUL bytes and the probes of vulnerability scanners.
 *
 * Configuration (JSON, the `config` table of the guard in vigil.toml), every key optional:
 *
 *   {
 *     "status": 403,                       status of a refusal, 400-599
 *     "checks": {"traversal": true, "nul": true, "scanners": true},
 *     "user_agents": ["evil-bot"],         more User-Agent substrings (case-insensitive)
 *     "paths": [".backup"]                 more path segments scanners probe
 *   }
 *
 * traversal: a `..` path segment in the path or in a query value, after undoing percent
 *   encoding (also double encoding and `%u002e`), overlong UTF-8 forms of `.`, `/` and `\`,
 *   and treating `\` as `/`; `..;` (a segment with parameters) counts too.
 * nul: a NUL byte in the path or the query, raw or encoded.
 * scanners: a known scanner in User-Agent, or a path segment that scanners probe (`.git`,
 *   `.env`, `wp-admin`, ...); a segment matches when equal to the signature or when it
 *   continues with a dot (`.env.bak`).
 *
 * Each detection is refused and reported as a finding (`path-traversal`, `nul-byte`,
 * `scanner`). Build: `cargo build -p vigil-guard-artifacts` (see the README).
 */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cJSON.h"
#include "guard.h"

#define MAX_EXTRA 64
#define MAX_SIGNATURE 128
/* Rounds of percent decoding: undoes double and triple encoding. */
#define DECODE_ROUNDS 3

static const char *const SCANNER_AGENTS[] = {
    "sqlmap", "nikto", "nmap", "masscan", "zgrab", "nuclei", "dirbuster", "gobuster",
    "wpscan", "acunetix", "nessus", "openvas", "w3af", "fuzz faster u fool", "feroxbuster",
    "wfuzz", "havij", "netsparker", "jaeles", "commix",
};

static const char *const SCANNER_PATHS[] = {
    ".git", ".svn", ".hg", ".env", ".aws", ".ds_store", ".htaccess", ".htpasswd", "wp-admin",
    "wp-login.php", "xmlrpc.php", "phpmyadmin", "server-status", "cgi-bin",
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The checked configuration. Guest memory lives as long as one instance; init runs on every
 * fresh one. */
static struct {
    uint16_t status;
    bool traversal, nul, scanners;
    char *user_agents[MAX_EXTRA];
    size_t n_user_agents;
    char *paths[MAX_EXTRA];
    size_t n_paths;
} policy;

/* A growable byte buffer. */
typedef struct {
    uint8_t *ptr;
    size_t len;
} bytes_t;

static void set_error(guard_string_t *err, const char *fmt, const char *a, const char *b) {
    char message[256];
    snprintf(message, sizeof message, fmt, a, b);
    guard_string_dup(err, message);
}

static void forget_policy(void) {
    for (size_t i = 0; i < policy.n_user_agents; i++) free(policy.user_agents[i]);
    for (size_t i = 0; i < policy.n_paths; i++) free(policy.paths[i]);
    memset(&policy, 0, sizeof policy);
}

static char *lowercase_copy(const char *s) {
    size_t n = strlen(s);
    char *out = malloc(n + 1);
    if (out == NULL) abort();
    for (size_t i = 0; i <= n; i++) {
        char c = s[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    return out;
}

/* Reads a list of signatures into `out`; returns false with `err` naming the entry. */
static bool read_signatures(const cJSON *list, const char *field, char **out, size_t *n,
                            guard_string_t *err) {
    if (!cJSON_IsArray(list)) {
        set_error(err, "%s: must be a list of strings", field, "");
        return false;
    }
    int count = cJSON_GetArraySize(list);
    if (count > MAX_EXTRA) {
        set_error(err, "%s: at most 64 entries", field, "");
        return false;
    }
    for (int i = 0; i < count; i++) {
        const cJSON *item = cJSON_GetArrayItem(list, i);
        const char *s = cJSON_GetStringValue(item);
        if (s == NULL || s[0] == '\0' || strlen(s) > MAX_SIGNATURE) {
            char index[16];
            snprintf(index, sizeof index, "%d", i);
            set_error(err, "%s[%s]: must be a non-empty string of at most 128 bytes", field,
                      index);
            return false;
        }
        out[(*n)++] = lowercase_copy(s);
    }
    return true;
}

static bool read_checks(const cJSON *checks, guard_string_t *err) {
    if (!cJSON_IsObject(checks)) {
        set_error(err, "checks: must be an object of check name -> true/false", "", "");
        return false;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, checks) {
        bool *flag = strcmp(item->string, "traversal") == 0 ? &policy.traversal
                     : strcmp(item->string, "nul") == 0     ? &policy.nul
                     : strcmp(item->string, "scanners") == 0 ? &policy.scanners
                                                             : NULL;
        if (flag == NULL) {
            set_error(err, "checks.%s: unknown check, expected traversal, nul or scanners",
                      item->string, "");
            return false;
        }
        if (!cJSON_IsBool(item)) {
            set_error(err, "checks.%s: must be true or false", item->string, "");
            return false;
        }
        *flag = cJSON_IsTrue(item);
    }
    return true;
}

static bool read_policy(const cJSON *root, guard_string_t *err) {
    if (!cJSON_IsObject(root)) {
        set_error(err, "config: must be a JSON object", "", "");
        return false;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        const char *key = item->string;
        if (strcmp(key, "status") == 0) {
            double v = item->valuedouble;
            if (!cJSON_IsNumber(item) || v != (double)(int)v || v < 400 || v > 599) {
                set_error(err, "status: must be an integer from 400 to 599", "", "");
                return false;
            }
            policy.status = (uint16_t)v;
        } else if (strcmp(key, "checks") == 0) {
            if (!read_checks(item, err)) return false;
        } else if (strcmp(key, "user_agents") == 0) {
            if (!read_signatures(item, "user_agents", policy.user_agents,
                                 &policy.n_user_agents, err))
                return false;
        } else if (strcmp(key, "paths") == 0) {
            if (!read_signatures(item, "paths", policy.paths, &policy.n_paths, err))
                return false;
        } else {
            set_error(err,
                      "unknown field `%s`, expected one of status, checks, user_agents, paths",
                      key, "");
            return false;
        }
    }
    return true;
}

bool exports_guard_init(guard_string_t *config, guard_string_t *err) {
    forget_policy();
    policy.status = 403;
    policy.traversal = policy.nul = policy.scanners = true;
    bool ok;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)config->ptr, config->len, &end, false);
    if (root == NULL) {
        char at[24];
        snprintf(at, sizeof at, "%zu", end ? (size_t)(end - (const char *)config->ptr) : 0);
        set_error(err, "config: not valid JSON (at byte %s)", at, "");
        ok = false;
    } else {
        ok = read_policy(root, err);
        cJSON_Delete(root);
    }
    guard_string_free(config);
    return ok;
}

static int hex_value(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One round of percent decoding (`%2e`, and IIS's `%u002e` for code points below 0x80).
 * Returns whether anything was decoded. Decoding never lengthens, so it works in place. */
static bool percent_decode(bytes_t *b) {
    size_t r = 0, w = 0;
    bool changed = false;
    while (r < b->len) {
        uint8_t c = b->ptr[r];
        if (c == '%' && r + 2 < b->len && hex_value(b->ptr[r + 1]) >= 0 &&
            hex_value(b->ptr[r + 2]) >= 0) {
            b->ptr[w++] = (uint8_t)(hex_value(b->ptr[r + 1]) * 16 + hex_value(b->ptr[r + 2]));
            r += 3;
            changed = true;
        } else if (c == '%' && r + 5 < b->len && (b->ptr[r + 1] | 0x20) == 'u' &&
                   b->ptr[r + 2] == '0' && b->ptr[r + 3] == '0' && hex_value(b->ptr[r + 4]) >= 0 &&
                   hex_value(b->ptr[r + 4]) < 8 && hex_value(b->ptr[r + 5]) >= 0) {
            b->ptr[w++] = (uint8_t)(hex_value(b->ptr[r + 4]) * 16 + hex_value(b->ptr[r + 5]));
            r += 6;
            changed = true;
        } else {
            b->ptr[w++] = c;
            r++;
        }
    }
    b->len = w;
    return changed;
}

/* Replaces overlong UTF-8 encodings of ASCII (`\xc0\xae` for `.`, `\xe0\x80\xaf` for `/`)
 * with the character they smuggle, which is how some decoders read them. */
static void fold_overlong(bytes_t *b) {
    size_t r = 0, w = 0;
    while (r < b->len) {
        uint8_t c = b->ptr[r];
        size_t n = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        uint32_t cp = n == 2 ? (c & 0x1Fu) : n == 3 ? (c & 0x0Fu) : (c & 0x07u);
        bool overlong = n > 1 && r + n <= b->len;
        for (size_t i = 1; overlong && i < n; i++) {
            uint8_t cont = b->ptr[r + i];
            overlong = (cont & 0xC0) == 0x80;
            cp = (cp << 6) | (cont & 0x3Fu);
        }
        if (overlong && cp < 0x80) {
            b->ptr[w++] = (uint8_t)cp;
            r += n;
        } else {
            b->ptr[w++] = c;
            r++;
        }
    }
    b->len = w;
}

/* A decoded copy of `len` bytes at `src`: percent decoding until stable (bounded), overlong
 * forms folded, `\` read as `/`. */
static bytes_t normalize(const uint8_t *src, size_t len) {
    bytes_t b = {malloc(len + 1), len};
    if (b.ptr == NULL) abort();
    memcpy(b.ptr, src, len);
    for (int round = 0; round < DECODE_ROUNDS; round++) {
        fold_overlong(&b);
        if (!percent_decode(&b)) break;
    }
    fold_overlong(&b);
    for (size_t i = 0; i < b.len; i++) {
        if (b.ptr[i] == '\\') b.ptr[i] = '/';
    }
    return b;
}

static bool has_nul(const bytes_t *b) { return memchr(b->ptr, 0, b->len) != NULL; }

static bool ieq_prefix(const uint8_t *s, size_t len, const char *lower_sig, size_t sig_len) {
    if (len < sig_len) return false;
    for (size_t i = 0; i < sig_len; i++) {
        uint8_t c = s[i];
        if (c >= 'A' && c <= 'Z') c = (uint8_t)(c - 'A' + 'a');
        if (c != (uint8_t)lower_sig[i]) return false;
    }
    return true;
}

/* Calls `visit` on each `/`-separated segment of `b` until it returns true. */
typedef bool (*segment_fn)(const uint8_t *segment, size_t len, const char **found);

static bool any_segment(const bytes_t *b, segment_fn visit, const char **found) {
    size_t start = 0;
    for (size_t i = 0; i <= b->len; i++) {
        if (i == b->len || b->ptr[i] == '/') {
            if (visit(b->ptr + start, i - start, found)) return true;
            start = i + 1;
        }
    }
    return false;
}

static bool is_dot_dot(const uint8_t *s, size_t len, const char **found) {
    (void)found;
    return len >= 2 && s[0] == '.' && s[1] == '.' && (len == 2 || s[2] == ';');
}

static bool matches_signature(const uint8_t *s, size_t len, const char *sig) {
    size_t n = strlen(sig);
    return ieq_prefix(s, len, sig, n) && (len == n || s[n] == '.');
}

static bool is_probed_segment(const uint8_t *s, size_t len, const char **found) {
    for (size_t i = 0; i < COUNT(SCANNER_PATHS); i++) {
        if (matches_signature(s, len, SCANNER_PATHS[i])) return *found = SCANNER_PATHS[i], true;
    }
    for (size_t i = 0; i < policy.n_paths; i++) {
        if (matches_signature(s, len, policy.paths[i])) return *found = policy.paths[i], true;
    }
    return false;
}

static bool contains_ci(const uint8_t *s, size_t len, const char *lower_sig) {
    size_t n = strlen(lower_sig);
    for (size_t i = 0; i + n <= len; i++) {
        if (ieq_prefix(s + i, len - i, lower_sig, n)) return true;
    }
    return false;
}

static const char *scanner_agent(const guard_list_u8_t *agent) {
    for (size_t i = 0; i < COUNT(SCANNER_AGENTS); i++) {
        if (contains_ci(agent->ptr, agent->len, SCANNER_AGENTS[i])) return SCANNER_AGENTS[i];
    }
    for (size_t i = 0; i < policy.n_user_agents; i++) {
        if (contains_ci(agent->ptr, agent->len, policy.user_agents[i]))
            return policy.user_agents[i];
    }
    return NULL;
}

/* Whether a value of the query string, decoded, holds a `..` segment. The query is split on
 * `&` and `=` so that `file=../x` is read as the value `../x`. */
static bool query_traverses(const bytes_t *query) {
    size_t start = 0;
    for (size_t i = 0; i <= query->len; i++) {
        if (i == query->len || query->ptr[i] == '&' || query->ptr[i] == '=') {
            bytes_t part = {query->ptr + start, i - start};
            if (any_segment(&part, is_dot_dot, NULL)) return true;
            start = i + 1;
        }
    }
    return false;
}

typedef struct {
    const char *kind;
    char reason[200];
} finding_t;

/* The first policy violation of the request, if any. */
static bool inspect(const guard_request_t *req, finding_t *out) {
    bytes_t path = normalize(req->path.ptr, req->path.len);
    bytes_t query = {NULL, 0};
    if (req->query.is_some) query = normalize(req->query.val.ptr, req->query.val.len);
    const char *sig = NULL;
    bool hit = true;
    if (policy.nul && (has_nul(&path) || has_nul(&query))) {
        out->kind = "nul-byte";
        snprintf(out->reason, sizeof out->reason, "NUL byte in the request target");
    } else if (policy.traversal &&
               (any_segment(&path, is_dot_dot, NULL) || query_traverses(&query))) {
        out->kind = "path-traversal";
        snprintf(out->reason, sizeof out->reason, "path traversal");
    } else if (policy.scanners && any_segment(&path, is_probed_segment, &sig)) {
        out->kind = "scanner";
        snprintf(out->reason, sizeof out->reason, "scanner probe of %s", sig);
    } else {
        hit = false;
        if (policy.scanners) {
            for (size_t i = 0; i < req->headers.len; i++) {
                const vigil_guard_types_header_t *h = &req->headers.ptr[i];
                if (h->name.len == 10 && memcmp(h->name.ptr, "user-agent", 10) == 0 &&
                    (sig = scanner_agent(&h->value)) != NULL) {
                    out->kind = "scanner";
                    snprintf(out->reason, sizeof out->reason,
                             "scanner signature in User-Agent: %s", sig);
                    hit = true;
                    break;
                }
            }
        }
    }
    free(path.ptr);
    free(query.ptr);
    return hit;
}

void exports_guard_on_request(guard_request_t *req, guard_verdict_t *ret) {
    finding_t found;
    if (inspect(req, &found)) {
        guard_string_t kind, detail;
        guard_string_set(&kind, found.kind);
        char text[300];
        snprintf(text, sizeof text, "%s %.*s: %s", found.kind, (int)req->path.len,
                 (const char *)req->path.ptr, found.reason);
        guard_string_set(&detail, text);
        vigil_guard_state_finding(&kind, &detail);
        ret->tag = VIGIL_GUARD_TYPES_VERDICT_DENY;
        ret->val.deny.status = policy.status;
        guard_string_dup(&ret->val.deny.reason, found.reason);
        ret->val.deny.retry_after_secs.is_some = false;
    } else {
        ret->tag = VIGIL_GUARD_TYPES_VERDICT_ALLOW;
    }
    guard_request_free(req);
}

/* Tells Vigil this guard reads headers (User-Agent) but does nothing with responses, so
 * on-response is never called (see guard.wit: the vigil-guard-needs section). */
__asm__(".section \".custom_section.vigil-guard-needs\",\"\",@\n"
        ".ascii \"headers\"\n"
        ".text\n");

void exports_guard_on_response(guard_request_t *req, guard_response_t *resp) {
    guard_request_free(req);
    guard_response_free(resp);
}
