/* The protocol's half in C: reading requests from stdin, parsing a run request (and giving it TMPDIR), and writing
 * the one-line JSON answers to stdout, each built in a growable buffer; die answers a fatal error the same way
 * (protocol.py is the other half and documents both). The lowest layer: it calls no other file (supervisor.h). */
#include "supervisor.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- the buffer answers are built in */

static void sb_reserve(struct sbuf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 512;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        die("out of memory");
    b->p = p;
    b->cap = cap;
}

void sb_add(struct sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void sb_puts(struct sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    sb_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* ---------------------------------------------------------------- answers */

/* Length of the valid UTF-8 sequence at s, or 0. Stops at the terminating NUL because NUL is never a
 * continuation byte and the checks short-circuit. */
static size_t utf8_sequence(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if ((s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F))
            return 0; /* overlong, or a UTF-16 surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if ((s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] > 0x8F))
            return 0;
        return 4;
    }
    return 0;
}

/* A JSON string literal. Ids and paths come from the client and the file system and may hold any byte but NUL;
 * bytes that are not UTF-8 become U+FFFD so that the line always parses. */
static void sb_json_string(struct sbuf *b, const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    sb_add(b, "\"", 1);
    while (*s) {
        size_t n = utf8_sequence(s);
        if (n == 0) {
            sb_puts(b, "\\ufffd");
            s++;
        } else if (*s == '"' || *s == '\\') {
            char esc[2] = {'\\', (char)*s};
            sb_add(b, esc, 2);
            s++;
        } else if (*s < 0x20) {
            sb_printf(b, "\\u%04x", *s);
            s++;
        } else {
            sb_add(b, (const char *)s, n);
            s += n;
        }
    }
    sb_add(b, "\"", 1);
}

static void sb_json_string_or_null(struct sbuf *b, const char *s)
{
    if (s && *s)
        sb_json_string(b, s);
    else
        sb_puts(b, "null");
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            /* Nobody reads the results any more: hatchway went away. Nothing useful is left to do. */
            _exit(1);
        }
        p += k;
        n -= (size_t)k;
    }
}

/* Send one result line. write(2) directly: no stdio buffer can hold it back or interleave it. */
void emit(struct sbuf *b)
{
    sb_add(b, "\n", 1);
    write_all(STDOUT_FILENO, b->p, b->len);
    b->len = 0;
}

void die(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct sbuf b = {0};
    sb_puts(&b, "{\"ready\":false,\"error\":");
    sb_json_string(&b, msg);
    sb_puts(&b, "}");
    emit(&b);
    fprintf(stderr, "hatchway-supervisor: %s\n", msg);
    exit(2);
}

void emit_error(const char *msg)
{
    struct sbuf b = {0};
    sb_puts(&b, "{\"error\":");
    sb_json_string(&b, msg);
    sb_puts(&b, "}");
    emit(&b);
    free(b.p);
}

void emit_run_result(const struct run *r, const char *id, uint64_t cpu_us, uint64_t wall_us, uint64_t mem)
{
    struct sbuf b = {0};
    const char *status;
    long exit_code = -1, signal_no = -1;
    if (r->failure == FAIL_SETUP) {
        status = "setup_failed";
    } else if (r->failure == FAIL_EXEC) {
        status = "exec_failed";
        exit_code = r->exit_code_override;
    } else if (WIFSIGNALED(r->wstatus)) {
        status = "signaled";
        signal_no = WTERMSIG(r->wstatus);
    } else {
        status = "exited";
        exit_code = WEXITSTATUS(r->wstatus);
    }
    sb_puts(&b, "{\"id\":");
    sb_json_string(&b, id);
    sb_printf(&b, ",\"status\":\"%s\",\"exit_code\":", status);
    if (exit_code >= 0)
        sb_printf(&b, "%ld", exit_code);
    else
        sb_puts(&b, "null");
    sb_puts(&b, ",\"signal\":");
    if (signal_no >= 0)
        sb_printf(&b, "%ld", signal_no);
    else
        sb_puts(&b, "null");
    sb_printf(&b,
              ",\"cpu_us\":%llu,\"wall_us\":%llu,\"memory_bytes\":%llu,\"oom_killed\":%s,\"cpu_exceeded\":%s,"
              "\"wall_exceeded\":%s,\"output_exceeded\":%s,\"error\":",
              (unsigned long long)cpu_us, (unsigned long long)wall_us, (unsigned long long)mem,
              r->oom_killed ? "true" : "false", r->cpu_exceeded ? "true" : "false",
              r->wall_exceeded ? "true" : "false", r->output_exceeded ? "true" : "false");
    sb_json_string_or_null(&b, r->error);
    sb_puts(&b, "}");
    emit(&b);
    free(b.p);
}

/* ---------------------------------------------------------------- reading requests */

/* stdin is buffered here; a request is complete at its first empty field. */
static struct {
    char *buf;
    size_t start, len, cap, scan;
    bool at_field_start; /* the previous byte ended a field (or this is the request's first byte) */
    bool discarding;     /* the request in flight is too large: drop it, then answer with an error */
} In = {.at_field_start = true};

/* Find the next complete request; on REQ_OK, [*begin, *end) holds its fields, each NUL-terminated. */
enum read_result read_request(char **begin, char **end)
{
    for (;;) {
        while (In.scan < In.len) {
            char *z = memchr(In.buf + In.scan, '\0', In.len - In.scan);
            if (!z) {
                In.at_field_start = false;
                In.scan = In.len;
                break;
            }
            size_t p = (size_t)(z - In.buf);
            if (p > In.scan)
                In.at_field_start = false;
            In.scan = p + 1;
            if (!In.at_field_start) {
                In.at_field_start = true;
                continue;
            }
            /* An empty field: the request ends here. */
            size_t first = In.start;
            In.start = In.scan;
            if (In.discarding) {
                In.discarding = false;
                return REQ_TOO_LARGE;
            }
            *begin = In.buf + first;
            *end = In.buf + p;
            return REQ_OK;
        }
        if (!In.discarding && In.len - In.start > MAX_REQUEST_BYTES)
            In.discarding = true;
        if (In.discarding)
            In.start = In.scan = In.len;
        if (In.start > 0) {
            memmove(In.buf, In.buf + In.start, In.len - In.start);
            In.len -= In.start;
            In.scan -= In.start;
            In.start = 0;
        }
        if (In.cap - In.len < 4096) {
            size_t cap = In.cap ? In.cap * 2 : 65536;
            char *p = realloc(In.buf, cap);
            if (!p)
                die("out of memory");
            In.buf = p;
            In.cap = cap;
        }
        ssize_t k = read(STDIN_FILENO, In.buf + In.len, In.cap - In.len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return REQ_EOF;
        In.len += (size_t)k;
    }
}

/* Give the answer just written a head start over the idle work: on a machine with few CPUs the relay that carries
 * it to hatchway and the idle work slow each other down. Returns at once when a request is waiting. */
void let_the_answer_go(void)
{
    if (In.len > In.start)
        return;
    struct pollfd pfd = {STDIN_FILENO, POLLIN, 0};
    struct timespec ts = {0, (long)IDLE_DELAY_NS};
    while (ppoll(&pfd, 1, &ts, NULL) < 0 && errno == EINTR)
        ;
}

/* ---------------------------------------------------------------- the run request */

/* The scalar keys of a run request; env= and arg= repeat and are handled apart. */
enum key {
    KEY_ID,
    KEY_CPU_MS,
    KEY_WALL_MS,
    KEY_MEM_BYTES,
    KEY_PROCS,
    KEY_FSIZE_BYTES,
    KEY_STACK_BYTES,
    KEY_UID,
    KEY_GID, /* the numeric keys are KEY_CPU_MS..KEY_GID */
    KEY_STDIN,
    KEY_STDOUT,
    KEY_STDERR,
    KEY_CWD, /* the path keys are KEY_STDIN..KEY_CWD */
    KEY_SCRATCH,
    KEY_COUNT,
};

static const char *const key_names[KEY_COUNT] = {"id",     "cpu_ms",      "wall_ms", "mem_bytes", "procs",
                                                 "fsize_bytes", "stack_bytes", "uid",  "gid",     "stdin",
                                                 "stdout",      "stderr",      "cwd",  "scratch"};

static bool parse_u64(const char *s, uint64_t *out)
{
    if (!*s)
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

void free_request(struct request *rq)
{
    free(rq->env);
    free(rq->argv);
    memset(rq, 0, sizeof *rq);
}

/* Fill rq from the fields after the verb; returns NULL or what is wrong (in msg). */
const char *parse_run(char *begin, char *end, struct request *rq, char *msg, size_t msglen)
{
    memset(rq, 0, sizeof *rq);
    rq->id = "";
    size_t nenv = 0, nargv = 0;
    for (char *f = begin; f < end; f += strlen(f) + 1) {
        if (strncmp(f, "env=", 4) == 0)
            nenv++;
        else if (strncmp(f, "arg=", 4) == 0)
            nargv++;
    }
    rq->env = calloc(nenv + 2, sizeof *rq->env);
    rq->argv = calloc(nargv + 1, sizeof *rq->argv);
    if (!rq->env || !rq->argv)
        die("out of memory");

    unsigned seen = 0;
    bool have_uid = false, have_gid = false;
    for (char *f = begin; f < end; f += strlen(f) + 1) {
        char *eq = strchr(f, '=');
        if (!eq) {
            snprintf(msg, msglen, "field %.60s is not key=value", f);
            return msg;
        }
        size_t klen = (size_t)(eq - f);
        const char *v = eq + 1;
        if (klen == 3 && strncmp(f, "env", 3) == 0) {
            const char *veq = strchr(v, '=');
            if (!veq || veq == v) {
                snprintf(msg, msglen, "env=%.60s is not NAME=VALUE", v);
                return msg;
            }
            rq->env[rq->nenv++] = (char *)v;
            continue;
        }
        if (klen == 3 && strncmp(f, "arg", 3) == 0) {
            rq->argv[rq->nargv++] = (char *)v;
            continue;
        }
        enum key k;
        for (k = 0; k < KEY_COUNT; k++)
            if (strlen(key_names[k]) == klen && strncmp(f, key_names[k], klen) == 0)
                break;
        if (k == KEY_COUNT) {
            snprintf(msg, msglen, "unknown key %.*s", (int)(klen > 60 ? 60 : klen), f);
            return msg;
        }
        if (seen & (1u << k)) {
            snprintf(msg, msglen, "%s given twice", key_names[k]);
            return msg;
        }
        seen |= 1u << k;
        uint64_t n = 0;
        bool numeric = k >= KEY_CPU_MS && k <= KEY_GID;
        if (numeric && !parse_u64(v, &n)) {
            snprintf(msg, msglen, "%s=%.40s is not a non-negative integer", key_names[k], v);
            return msg;
        }
        if (k >= KEY_STDIN && k <= KEY_CWD && *v == '\0') {
            snprintf(msg, msglen, "%s is empty", key_names[k]);
            return msg;
        }
        switch (k) {
        case KEY_ID: rq->id = v; break;
        case KEY_CPU_MS: rq->cpu_ms = n; break;
        case KEY_WALL_MS: rq->wall_ms = n; break;
        case KEY_MEM_BYTES: rq->mem_bytes = n; break;
        case KEY_PROCS: rq->procs = n; break;
        case KEY_FSIZE_BYTES: rq->fsize_bytes = n; break;
        case KEY_STACK_BYTES: rq->stack_bytes = n; break;
        case KEY_UID:
            rq->uid = (uid_t)n;
            have_uid = n <= MAX_ID;
            break;
        case KEY_GID:
            rq->gid = (gid_t)n;
            have_gid = n <= MAX_ID;
            break;
        case KEY_STDIN: rq->stdin_path = v; break;
        case KEY_STDOUT: rq->stdout_path = v; break;
        case KEY_STDERR: rq->stderr_path = v; break;
        case KEY_CWD: rq->cwd = v; break;
        case KEY_SCRATCH:
            if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0) {
                snprintf(msg, msglen, "scratch must be 0 or 1");
                return msg;
            }
            rq->scratch = v[0] == '1';
            break;
        case KEY_COUNT: break;
        }
    }
    if (rq->nargv == 0 || rq->argv[0][0] == '\0')
        return "no program: give at least one non-empty arg=";
    if (!(seen & (1u << KEY_UID)) || !(seen & (1u << KEY_GID)))
        return "uid= and gid= are required";
    if (!have_uid || !have_gid)
        return "uid or gid out of range";
    /* Root in the container would own the supervisor's files and could signal it: the isolation rests on this. */
    if (rq->uid == 0 || rq->gid == 0)
        return "uid and gid must not be 0";
    if (rq->cpu_ms > MAX_TIME_MS || rq->wall_ms > MAX_TIME_MS)
        return "cpu_ms or wall_ms is too large";
    if (rq->procs > MAX_PROCS)
        return "procs is too large";
    if (rq->scratch && Supervisor.scratch_fd < 0)
        return "scratch=1 but the supervisor was started without --scratch";
    if (rq->scratch && rq->cwd)
        return "cwd= and scratch=1 exclude each other: with scratch=1 the scratch directory is the cwd";
    return NULL;
}

/* Give a request the scratch directory as TMPDIR, instead of any of its own; env has a spare slot for it. */
void set_tmpdir(struct request *rq, char *tmpdir_env)
{
    size_t i;
    for (i = 0; i < rq->nenv; i++)
        if (strncmp(rq->env[i], "TMPDIR=", 7) == 0)
            break;
    rq->env[i] = tmpdir_env;
    if (i == rq->nenv)
        rq->nenv++;
}
