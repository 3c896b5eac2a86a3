/*
 * hatchway-supervisor: runs test programs one at a time inside a grading container, each under its own limits,
 * and reports what that run alone used.
 *
 *   hatchway-supervisor [--cgroup DIR] [--scratch DIR] [--wipe DIR]...
 *
 * (A --wipe directory that does not exist is skipped: not every sandbox has /dev/mqueue.)
 *
 * It is the container's PID 1 and talks to hatchway over its own stdin/stdout (docker attach). A request is a
 * sequence of NUL-terminated fields ended by an empty field; the first field is the verb ("ping" or "run"), the
 * others are key=value. Every request gets exactly one single-line JSON answer. protocol.py is the other half of
 * this protocol and documents it field by field; PROTOCOL_VERSION changes whenever either side must change.
 *
 * Two ways to confine and measure a run:
 *   cgroup mode (--cgroup DIR): DIR/{memory,pids,cpuacct} are cgroup v1 directories. Each run gets fresh child
 *     cgroups, so its peak memory, CPU time and process count are its own and nothing of an earlier run (page
 *     cache included) is charged to it. The kernel enforces memory and process limits.
 *   proc mode (no --cgroup, e.g. under gVisor): CPU comes from getrusage(RUSAGE_CHILDREN) deltas, which is exact
 *     because every process of a run is reaped here (we are PID 1 or a child subreaper); memory is enforced by
 *     sampling the resident size of the run's processes in /proc; processes by RLIMIT_NPROC.
 *
 * The program runs as an unprivileged uid/gid with no supplementary groups, no capabilities and no_new_privs, so
 * it can neither signal nor ptrace this process, and it inherits no descriptor but 0, 1 and 2 (files opened here),
 * so it cannot write to the result channel.
 *
 * A run's clock starts just before exec (the child reports the moment through its close-on-exec pipe) and stops
 * when the main process is reaped. When it ends, every process it left is killed and reaped before the answer:
 * through the cgroup's process list in cgroup mode; with kill(-1) as PID 1 in proc mode; and, on a host (unit
 * tests), through the process group and the supervisor's descendants in /proc, never kill(-1). The counters in
 * the answer (exit status, CPU, peak memory, oom_killed) are read only then.
 *
 * Work between runs. After writing an answer (and a short pause that lets the answer through docker's relay
 * first), and before reading the next request, the supervisor:
 *   - removes the run's scratch directory, empties the --wipe directories and removes the run's cgroups;
 *   - prepares the next run: its cgroups (with the previous request's limits written, so that a run writes only
 *     the limits that changed), its scratch directory (root's, 0700, until the run's uid is known), and a zygote:
 *     a child forked only now, when every process of the previous run is dead and its leftovers are gone. The
 *     zygote joins the next run's cgroups at once (the migration can wait milliseconds for the kernel, and now
 *     nobody waits for it), makes its own session, and blocks on a socket. The run request hands it the files
 *     the supervisor opened for stdin/stdout/stderr (SCM_RIGHTS) and the request's fields (shared memory); it
 *     sets the limits, drops to the run's uid and execs, exactly as a forked child does. It is root until then,
 *     and serves that one run only. If there is no zygote (it could not be made, or someone killed it), the run
 *     forks its child as it comes.
 *   Because the answer is already out, a clean-up failure (a scratch directory or a --wipe directory that cannot
 *   be emptied) goes into the next run's answer instead: that run first tries the clean-up again; if it
 *   succeeds the run goes ahead and its "error" says what happened, otherwise the run is "setup_failed" with
 *   "the clean-up after the previous run failed: ..." and nothing is started, since leftovers of another run
 *   would be in reach. Failures after the last run go to stderr.
 *
 * Stopping a run from outside: SIGTERM to the supervisor (docker kill --signal TERM) is passed on to every process of
 * the run in flight, which may end in its own time; SIGUSR1 kills the run as a limit would. Either way the run is
 * answered as usual and the supervisor keeps serving. hatchway sends them only while a run is in flight, and does not
 * reuse a sandbox it has stopped a run in, so a signal that arrives late can never reach another run.
 *
 * Built static (cc -static) so the same binary runs in Debian, Alpine/musl and scratch images.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Older libc headers lack these; the numbers are the kernel's ABI. */
#ifndef __NR_close_range
#define __NR_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#endif
#ifndef PR_CAP_AMBIENT_CLEAR_ALL
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

#define PROTOCOL_VERSION 1
/* argv and environment together cannot exceed ARG_MAX anyway; anything longer is a broken client. */
#define MAX_REQUEST_BYTES (8u << 20)
#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"
#define NS_PER_MS 1000000ull
#define NS_PER_S 1000000000ull
/* The CPU check never sleeps less than this, so polling costs nothing noticeable even with many CPUs. */
#define MIN_CPU_CHECK_NS (2 * NS_PER_MS)
/* Memory can grow by ~1 GB/s; 5 ms between samples bounds the overshoot of proc mode's soft limit. */
#define MEM_SAMPLE_NS (5 * NS_PER_MS)
/* After SIGKILL a process can linger only in uninterruptible sleep; re-send meanwhile to catch late forks. */
#define REKILL_NS (50 * NS_PER_MS)
#define KILL_GIVE_UP_NS (5 * NS_PER_S)
/* How long idle work waits after an answer, unless the next request comes first: about the time the answer takes
 * through docker's attach relay (0.3-0.6 ms), whose processes would otherwise compete with it for a CPU. */
#define IDLE_DELAY_NS (400 * 1000ull)
#define MAX_TIME_MS 1000000000ull /* ~11.5 days: keeps every deadline far from overflowing */
#define MAX_PROCS 4194304ull      /* PID_MAX_LIMIT: pids.max refuses more */
#define MAX_ID 4294967294ull      /* (uid_t)-1 means "unchanged" to setresuid */

enum { CG_MEMORY, CG_PIDS, CG_CPUACCT, CG_COUNT };
static const char *const cg_names[CG_COUNT] = {"memory", "pids", "cpuacct"};

/* The counters read after every run: opened with the run's cgroups, ahead of it, and read from offset 0. */
enum { CT_CPU, CT_PEAK, CT_OOM, CT_COUNT };
static const struct {
    int cg;
    const char *file;
} counter_files[CT_COUNT] = {
    {CG_CPUACCT, "cpuacct.usage"}, {CG_MEMORY, "memory.max_usage_in_bytes"}, {CG_MEMORY, "memory.oom_control"}};

/* Everything fixed at start-up. */
static struct {
    bool cgroup_mode;
    int cg_root[CG_COUNT]; /* O_PATH descriptors of DIR/memory, DIR/pids, DIR/cpuacct */
    bool has_memsw;
    bool reenable_oom_killer; /* the parent memory cgroup disables the OOM killer and children inherit that */
    const char *scratch_dir;
    int scratch_fd;
    size_t nwipe;
    const char **wipe_path;
    int *wipe_fd;
    bool pid1;
    bool can_drop_bounding_set; /* we hold CAP_SETPCAP */
    pid_t self;
    long ncpu;
    long clk_tck;
    long page_size;
    uint64_t runs;
    uint64_t last_mem_bytes, last_procs; /* the limits of the latest run request, written ahead for the next one */
    int stop_signal; /* hatchway asked to stop the run in flight: SIGTERM to pass on, or SIGKILL (it sent SIGUSR1) */
    char *shm; /* shared with zygotes, which read their request here */
    size_t shm_size;
} Supervisor = {.scratch_fd = -1, .cg_root = {-1, -1, -1}};

/* ---------------------------------------------------------------- small helpers */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }
static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* Symbolic names make failure messages greppable and independent of the libc's wording. */
static const char *errno_name(int e)
{
    switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ESRCH: return "ESRCH";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case ENXIO: return "ENXIO";
    case E2BIG: return "E2BIG";
    case ENOEXEC: return "ENOEXEC";
    case EBADF: return "EBADF";
    case ECHILD: return "ECHILD";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case EXDEV: return "EXDEV";
    case ENODEV: return "ENODEV";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case ETXTBSY: return "ETXTBSY";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case EROFS: return "EROFS";
    case EMLINK: return "EMLINK";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOSYS: return "ENOSYS";
    case ENOTEMPTY: return "ENOTEMPTY";
    case ELOOP: return "ELOOP";
    case ELIBBAD: return "ELIBBAD";
    case EDQUOT: return "EDQUOT";
    case ESTALE: return "ESTALE";
    case EPROTO: return "EPROTO";
    default: return NULL;
    }
}

/* "ENOENT (No such file or directory)" */
static void describe_errno(char *out, size_t size, int e)
{
    const char *name = errno_name(e);
    if (name)
        snprintf(out, size, "%s (%s)", name, strerror(e));
    else
        snprintf(out, size, "errno %d (%s)", e, strerror(e));
}

/* A growable byte buffer; results are built in one and written with a single write(2). */
struct sbuf {
    char *p;
    size_t len, cap;
};

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

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
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
static void emit(struct sbuf *b)
{
    sb_add(b, "\n", 1);
    write_all(STDOUT_FILENO, b->p, b->len);
    b->len = 0;
}

static void die(const char *fmt, ...)
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

/* Read an open small file from its start, as a string; returns bytes read or -1 with errno set. A cgroup file
 * read again from offset 0 shows its current value. */
static ssize_t read_open_file(int fd, char *buf, size_t size)
{
    size_t got = 0;
    while (got + 1 < size) {
        ssize_t k = pread(fd, buf + got, size - 1 - got, (off_t)got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0)
            break;
        got += (size_t)k;
    }
    buf[got] = '\0';
    return (ssize_t)got;
}

/* Read a small file relative to a directory descriptor; returns bytes read or -1 with errno set. */
static ssize_t read_file_at(int dirfd, const char *name, char *buf, size_t size)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = read_open_file(fd, buf, size);
    int e = errno;
    close(fd);
    errno = e;
    return got;
}

static bool parse_u64_text(const char *buf, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (errno || end == buf)
        return false;
    *out = v;
    return true;
}

static bool read_u64_at(int dirfd, const char *name, uint64_t *out)
{
    char buf[64];
    return read_file_at(dirfd, name, buf, sizeof buf) > 0 && parse_u64_text(buf, out);
}

/* Returns 0 or errno. */
static int write_file_at(int dirfd, const char *name, const char *value)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    size_t n = strlen(value);
    ssize_t k = write(fd, value, n);
    int e = k == (ssize_t)n ? 0 : (k < 0 ? errno : EIO);
    close(fd);
    return e;
}

/* Open the counter files of the cgroups in cg; one that fails is -1 and read by name instead. */
static void open_counters(const int cg[CG_COUNT], int counter[CT_COUNT])
{
    for (int i = 0; i < CT_COUNT; i++)
        counter[i] = openat(cg[counter_files[i].cg], counter_files[i].file, O_RDONLY | O_CLOEXEC);
}

static void close_counters(int counter[CT_COUNT])
{
    for (int i = 0; i < CT_COUNT; i++) {
        if (counter[i] >= 0)
            close(counter[i]);
        counter[i] = -1;
    }
}

static ssize_t read_counter(const int cg[CG_COUNT], const int counter[CT_COUNT], int which, char *buf, size_t size)
{
    if (counter[which] >= 0)
        return read_open_file(counter[which], buf, size);
    return read_file_at(cg[counter_files[which].cg], counter_files[which].file, buf, size);
}

static bool read_counter_u64(const int cg[CG_COUNT], const int counter[CT_COUNT], int which, uint64_t *out)
{
    char buf[64];
    return read_counter(cg, counter, which, buf, sizeof buf) > 0 && parse_u64_text(buf, out);
}

/* "name 123" on its own line of a flat key/value file such as memory.oom_control. */
static bool find_key_u64(const char *text, const char *key, uint64_t *out)
{
    size_t klen = strlen(key);
    for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            *out = strtoull(line + klen + 1, NULL, 10);
            return true;
        }
    }
    return false;
}

/* ---------------------------------------------------------------- removing files without following links */

/* Remove everything inside the directory dirfd refers to, never following a symbolic link. Iterative, with one
 * descriptor open at a time, so that a run cannot exhaust descriptors or the stack with deeply nested
 * directories. Only called when every process of the run is dead, so nothing changes the tree meanwhile. */
static int empty_dir(int dirfd, char *err, size_t errlen)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "open: %s", strerror(errno));
        return -1;
    }
    char **stack = NULL;
    size_t depth = 0, cap = 0;
    int rc = 0;
    for (;;) {
        int listfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = listfd >= 0 ? fdopendir(listfd) : NULL;
        if (!d) {
            if (listfd >= 0)
                close(listfd);
            snprintf(err, errlen, "list: %s", strerror(errno));
            rc = -1;
            break;
        }
        char *descend = NULL;
        struct dirent *e;
        while (rc == 0 && (e = readdir(d)) != NULL) {
            const char *name = e->d_name;
            if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0')))
                continue;
            bool is_dir = e->d_type == DT_DIR;
            if (e->d_type == DT_UNKNOWN) {
                struct stat st;
                is_dir = fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
            }
            if (!is_dir) {
                if (unlinkat(fd, name, 0) < 0 && errno != ENOENT) {
                    snprintf(err, errlen, "unlink %s: %s", name, strerror(errno));
                    rc = -1;
                }
                continue;
            }
            if (unlinkat(fd, name, AT_REMOVEDIR) == 0)
                continue;
            if (errno == ENOTEMPTY || errno == EEXIST) {
                descend = strdup(name);
                if (!descend)
                    die("out of memory");
                break;
            }
            snprintf(err, errlen, "rmdir %s: %s", name, strerror(errno));
            rc = -1;
        }
        closedir(d);
        if (rc != 0)
            break;
        if (descend) {
            int child = openat(fd, descend, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (child < 0) {
                snprintf(err, errlen, "open %s: %s", descend, strerror(errno));
                free(descend);
                rc = -1;
                break;
            }
            if (depth == cap) {
                cap = cap ? cap * 2 : 16;
                char **grown = realloc(stack, cap * sizeof *stack);
                if (!grown)
                    die("out of memory");
                stack = grown;
            }
            stack[depth++] = descend;
            close(fd);
            fd = child;
            continue;
        }
        if (depth == 0)
            break;
        /* This directory is empty now: go back up and remove it, then rescan the parent. */
        int parent = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (parent < 0) {
            snprintf(err, errlen, "open ..: %s", strerror(errno));
            rc = -1;
            break;
        }
        close(fd);
        fd = parent;
        char *name = stack[--depth];
        if (unlinkat(fd, name, AT_REMOVEDIR) < 0) {
            snprintf(err, errlen, "rmdir %s: %s", name, strerror(errno));
            rc = -1;
        }
        free(name);
        if (rc != 0)
            break;
    }
    while (depth > 0)
        free(stack[--depth]);
    free(stack);
    close(fd);
    return rc;
}

/* Remove dirfd/name and everything below it. */
static int remove_tree_at(int dirfd, const char *name, char *err, size_t errlen)
{
    int fd = openat(dirfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "open: %s", strerror(errno));
        return -1;
    }
    int rc = empty_dir(fd, err, errlen);
    close(fd);
    if (rc == 0 && unlinkat(dirfd, name, AT_REMOVEDIR) < 0) {
        snprintf(err, errlen, "rmdir: %s", strerror(errno));
        rc = -1;
    }
    return rc;
}

/* ---------------------------------------------------------------- reading requests */

/* stdin is buffered here; a request is complete at its first empty field. */
static struct {
    char *buf;
    size_t start, len, cap, scan;
    bool at_field_start; /* the previous byte ended a field (or this is the request's first byte) */
    bool discarding;     /* the request in flight is too large: drop it, then answer with an error */
} In = {.at_field_start = true};

enum read_result { REQ_OK, REQ_TOO_LARGE, REQ_EOF };

/* Find the next complete request; on REQ_OK, [*begin, *end) holds its fields, each NUL-terminated. */
static enum read_result read_request(char **begin, char **end)
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

/* ---------------------------------------------------------------- the run request */

struct request {
    const char *id;
    uint64_t cpu_ms, wall_ms, mem_bytes, procs, fsize_bytes;
    uid_t uid;
    gid_t gid;
    const char *stdin_path, *stdout_path, *stderr_path, *cwd;
    bool scratch;
    char **env; /* NULL-terminated, with one spare slot for TMPDIR */
    size_t nenv;
    char **argv; /* NULL-terminated */
    size_t nargv;
};

/* The scalar keys of a run request; env= and arg= repeat and are handled apart. */
enum key {
    KEY_ID,
    KEY_CPU_MS,
    KEY_WALL_MS,
    KEY_MEM_BYTES,
    KEY_PROCS,
    KEY_FSIZE_BYTES,
    KEY_UID,
    KEY_GID, /* the numeric keys are KEY_CPU_MS..KEY_GID */
    KEY_STDIN,
    KEY_STDOUT,
    KEY_STDERR,
    KEY_CWD, /* the path keys are KEY_STDIN..KEY_CWD */
    KEY_SCRATCH,
    KEY_COUNT,
};
static const char *const key_names[KEY_COUNT] = {"id",  "cpu_ms", "wall_ms", "mem_bytes", "procs",  "fsize_bytes",
                                                 "uid", "gid",    "stdin",   "stdout",    "stderr", "cwd",
                                                 "scratch"};

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

static void free_request(struct request *rq)
{
    free(rq->env);
    free(rq->argv);
    memset(rq, 0, sizeof *rq);
}

/* Fill rq from the fields after the verb; returns NULL or what is wrong (in msg). */
static const char *parse_run(char *begin, char *end, struct request *rq, char *msg, size_t msglen)
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

/* ---------------------------------------------------------------- one run */

/* What the child reports through its close-on-exec pipe when it fails before the program starts. */
enum stage {
    STAGE_CGROUP = 1,
    STAGE_STDIO,
    STAGE_RLIMIT,
    STAGE_GROUPS,
    STAGE_GID,
    STAGE_UID,
    STAGE_CAPS,
    STAGE_NO_NEW_PRIVS,
    STAGE_VERIFY,
    STAGE_CHDIR,
    STAGE_EXEC,
    STAGE_STARTING,
    STAGE_ORDER,
};

static const char *stage_name(int stage)
{
    switch (stage) {
    case STAGE_CGROUP: return "join the run's cgroups";
    case STAGE_STDIO: return "set up stdin/stdout/stderr";
    case STAGE_RLIMIT: return "set resource limits";
    case STAGE_GROUPS: return "drop supplementary groups";
    case STAGE_GID: return "set gid";
    case STAGE_UID: return "set uid";
    case STAGE_CAPS: return "drop capabilities";
    case STAGE_NO_NEW_PRIVS: return "set no_new_privs";
    case STAGE_VERIFY: return "verify dropped privileges";
    case STAGE_CHDIR: return "chdir";
    case STAGE_EXEC: return "exec";
    case STAGE_ORDER: return "take the request from the supervisor";
    default: return "set up";
    }
}

/* A record on the report pipe: STAGE_STARTING with the time just before exec, then, if it fails, the stage and
 * errno. */
struct child_report {
    int stage;
    int err;
    uint64_t t_ns;
};

enum failure { FAIL_NONE, FAIL_SETUP, FAIL_EXEC };

struct run {
    char name[32]; /* run-<n>: the run's cgroup and scratch directory names */
    int cg[CG_COUNT];
    int counter[CT_COUNT];
    int in_fd, out_fd, err_fd;
    char *scratch_path;
    char *tmpdir_env;
    bool scratch_made;
    int report[2];
    pid_t pid;
    uint64_t t0, t_end;
    bool reaped;
    int wstatus;
    struct rusage ru;
    struct rusage children_before;
    bool killed, oom_killed, cpu_exceeded, wall_exceeded, output_exceeded;
    uint64_t peak_sampled;
    enum failure failure;
    struct child_report failed; /* the child's failure record, stage 0 if none */
    int exit_code_override;     /* for exec failures: 127 or 126 like a shell */
    char error[900];
};

static void set_error(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct run *r, const char *fmt, ...)
{
    if (r->error[0])
        return; /* the first failure is the one that explains the others */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
}

static void set_errno_error(struct run *r, const char *what, int e)
{
    char d[128];
    describe_errno(d, sizeof d, e);
    set_error(r, "%s: %s", what, d);
}

/* Add a note after whatever error the run has. */
static void append_error(struct run *r, const char *note)
{
    size_t n = strlen(r->error);
    snprintf(r->error + n, sizeof r->error - n, "%s%s", n ? "; " : "", note);
}

/* --- the child, between fork and exec: runs as root, must not return */

static void child_fail(int fd, int stage, int err) __attribute__((noreturn));
static void child_fail(int fd, int stage, int err)
{
    struct child_report rep = {stage, err, 0};
    ssize_t ignored = write(fd, &rep, sizeof rep);
    (void)ignored;
    _exit(stage == STAGE_EXEC ? (err == ENOENT || err == ENOTDIR ? 127 : 126) : 125);
}

/* Mark every descriptor from 3 up close-on-exec, so that the program inherits only 0, 1 and 2 while the report
 * pipe stays usable until exec. */
static int cloexec_from_3(void)
{
    if (syscall(__NR_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) == 0)
        return 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        int self_fd = dirfd(d);
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            int fd = atoi(e->d_name);
            if (fd >= 3 && fd != self_fd && fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 && errno != EBADF)
                return -1;
        }
        closedir(d);
        return 0;
    }
    struct rlimit rl;
    long top = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (long)rl.rlim_cur : 65536;
    for (long fd = 3; fd < top && fd < 1048576; fd++)
        fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    return 0;
}

/* Raise or lower a limit; without CAP_SYS_RESOURCE the hard limit cannot go above the inherited one. */
static int set_rlimit(int resource, rlim_t soft, rlim_t hard)
{
    struct rlimit cur;
    if (getrlimit(resource, &cur) == 0 && cur.rlim_max != RLIM_INFINITY && hard > cur.rlim_max)
        hard = cur.rlim_max;
    if (soft > hard)
        soft = hard;
    struct rlimit rl = {soft, hard};
    if (setrlimit(resource, &rl) == 0)
        return 0;
    if (errno == EPERM && getrlimit(resource, &cur) == 0) {
        rl.rlim_max = cur.rlim_max;
        rl.rlim_cur = soft < cur.rlim_max ? soft : cur.rlim_max;
        return setrlimit(resource, &rl);
    }
    return -1;
}

/* execvpe without its ENOEXEC-to-/bin/sh fallback: a missing interpreter line is the program's own error. */
static int exec_search(char *const argv[], char *const envp[])
{
    const char *file = argv[0];
    if (strchr(file, '/')) {
        execve(file, argv, envp);
        return errno;
    }
    const char *path = DEFAULT_PATH;
    for (char *const *e = envp; *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            path = *e + 5;
    size_t flen = strlen(file);
    bool denied = false;
    for (const char *p = path;; p++) {
        const char *colon = strchrnul(p, ':');
        size_t dlen = (size_t)(colon - p);
        char buf[PATH_MAX];
        if (dlen + 1 + flen < sizeof buf) {
            if (dlen == 0) {
                memcpy(buf, file, flen + 1); /* an empty PATH entry means the current directory */
            } else {
                memcpy(buf, p, dlen);
                buf[dlen] = '/';
                memcpy(buf + dlen + 1, file, flen + 1);
            }
            execve(buf, argv, envp);
            switch (errno) {
            case EACCES: denied = true; break;
            case ENOENT:
            case ENOTDIR:
            case ESTALE:
            case ENODEV:
            case ETIMEDOUT: break;
            default: return errno;
            }
        }
        if (*colon == '\0')
            break;
        p = colon;
    }
    return denied ? EACCES : ENOENT;
}

/* The first half of the child: leave the supervisor's signal state, make the run's own session and join its
 * cgroups. A zygote does this while the supervisor waits for the request; a forked child right away. */
static void child_enter(const struct run *r)
{
    /* An ignored signal stays ignored across exec, and so does the mask. main() reset every other disposition to
     * the default once; handlers are reset by exec itself. */
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    /* Its own session and process group: one kill(-pid) ends the run's ordinary processes at once. */
    setsid();

    /* Join the cgroups while still root: the cgroup files are root's, and afterwards nothing can leave them. */
    if (Supervisor.cgroup_mode)
        for (int i = 0; i < CG_COUNT; i++) {
            int e = write_file_at(r->cg[i], "cgroup.procs", "0");
            if (e)
                child_fail(r->report[1], STAGE_CGROUP, e);
        }

    /* What follows does not depend on the request, so a zygote has it done before the request comes. Every
     * descriptor it gets from now on is close-on-exec, so the program inherits only 0, 1 and 2. */
    if (cloexec_from_3() < 0)
        child_fail(r->report[1], STAGE_STDIO, errno);
    if (set_rlimit(RLIMIT_CORE, 0, 0) < 0)
        child_fail(r->report[1], STAGE_RLIMIT, errno);
    /* Dropping the bounding set needs CAP_SETPCAP, which the container does not grant; it is only extra. */
    if (Supervisor.can_drop_bounding_set)
        for (int cap = 0; cap <= CAP_LAST_CAP; cap++)
            prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}

/* The second half: the request's files, limits and user, then exec. Runs as root until it drops privileges. */
static void child_exec(const struct request *rq, const struct run *r) __attribute__((noreturn));
static void child_exec(const struct request *rq, const struct run *r)
{
    int rep = r->report[1];

    /* Move the three files above 2 first: one of them may itself be 0, 1 or 2 if the supervisor's own were
     * closed, and dup2 onto itself would keep the close-on-exec flag. */
    int fds[3] = {r->in_fd, r->out_fd, r->err_fd};
    for (int i = 0; i < 3; i++) {
        fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
        if (fds[i] < 0)
            child_fail(rep, STAGE_STDIO, errno);
    }
    for (int i = 0; i < 3; i++)
        if (dup2(fds[i], i) < 0)
            child_fail(rep, STAGE_STDIO, errno);

    if (rq->cpu_ms) {
        /* A backstop only: the supervisor's own check is finer and counts every process of the run. */
        rlim_t soft = (rlim_t)((rq->cpu_ms + 999) / 1000 + 1);
        if (set_rlimit(RLIMIT_CPU, soft, soft + 1) < 0)
            child_fail(rep, STAGE_RLIMIT, errno);
    }
    if (rq->fsize_bytes && set_rlimit(RLIMIT_FSIZE, (rlim_t)rq->fsize_bytes, (rlim_t)rq->fsize_bytes) < 0)
        child_fail(rep, STAGE_RLIMIT, errno);
    /* Set before setuid: the kernel compares the new user's process count with it when the uid changes. */
    if (!Supervisor.cgroup_mode && rq->procs && set_rlimit(RLIMIT_NPROC, (rlim_t)rq->procs, (rlim_t)rq->procs) < 0)
        child_fail(rep, STAGE_RLIMIT, errno);

    if (setgroups(0, NULL) < 0)
        child_fail(rep, STAGE_GROUPS, errno);
    if (setresgid(rq->gid, rq->gid, rq->gid) < 0)
        child_fail(rep, STAGE_GID, errno);
    if (setresuid(rq->uid, rq->uid, rq->uid) < 0)
        child_fail(rep, STAGE_UID, errno);

    /* Leaving uid 0 already empties the permitted and effective sets; inheritable survives it, so clear all. */
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct caps[2];
    memset(caps, 0, sizeof caps);
    if (syscall(SYS_capset, &hdr, caps) < 0)
        child_fail(rep, STAGE_CAPS, errno);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        child_fail(rep, STAGE_NO_NEW_PRIVS, errno);

    uid_t ru, eu, su;
    gid_t rg, eg, sg;
    if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0 || ru != rq->uid || eu != rq->uid ||
        su != rq->uid || rg != rq->gid || eg != rq->gid || sg != rq->gid || getgroups(0, NULL) != 0)
        child_fail(rep, STAGE_VERIFY, EPERM);
    memset(caps, 0xff, sizeof caps);
    if (syscall(SYS_capget, &hdr, caps) < 0 || caps[0].effective || caps[0].permitted || caps[0].inheritable ||
        caps[1].effective || caps[1].permitted || caps[1].inheritable)
        child_fail(rep, STAGE_VERIFY, EPERM);

    /* Set after setuid because a credential change clears it. If the supervisor dies (it is not PID 1 in unit
     * tests), the run must not live on. */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != Supervisor.self)
        _exit(125);

    /* As the run's user, so that the cwd is one it may enter. */
    const char *cwd = rq->scratch ? r->scratch_path : rq->cwd;
    if (cwd && chdir(cwd) < 0)
        child_fail(rep, STAGE_CHDIR, errno);

    /* The run's clock starts here: setting up, joining cgroups above all, is the supervisor's time, not the
     * program's (the first cgroup migration after a pause waits for an RCU grace period, milliseconds). */
    struct child_report start = {STAGE_STARTING, 0, now_ns()};
    if (write(rep, &start, sizeof start) != (ssize_t)sizeof start)
        _exit(125);
    child_fail(rep, STAGE_EXEC, exec_search(rq->argv, rq->env));
}

/* --- the zygote: the next run's process, made while the supervisor waits for the request */

/* The supervisor's order to its zygote. The request's fields are in Supervisor.shm; the run's stdin, stdout and stderr,
 * opened by the supervisor, come along as SCM_RIGHTS. */
struct zygote_order {
    uint32_t magic;
    uint32_t len; /* bytes in Supervisor.shm: the fields after the verb and the empty field that closes them */
};
#define ZYGOTE_MAGIC 0x7a79676fu

static struct {
    pid_t pid;     /* 0: none (never made, used, discarded, or it died and was reaped) */
    char name[32]; /* the run it was made for */
    int sock;      /* the supervisor's end of the order socket */
    int report;    /* the read end of its report pipe */
} Zygote = {.sock = -1, .report = -1};

/* Give a request the scratch directory as TMPDIR, instead of any of its own; env has a spare slot for it. */
static void set_tmpdir(struct request *rq, char *tmpdir_env)
{
    size_t i;
    for (i = 0; i < rq->nenv; i++)
        if (strncmp(rq->env[i], "TMPDIR=", 7) == 0)
            break;
    rq->env[i] = tmpdir_env;
    if (i == rq->nenv)
        rq->nenv++;
}

/* Made after the previous run ended and was cleaned up, so nothing of it can reach this process. Joins the run's
 * cgroups at once (the slow part, off the request's path), then waits for the order and becomes the run: the
 * same child_exec as a forked child. */
static void zygote_main(int sock, struct run *r) __attribute__((noreturn));
static void zygote_main(int sock, struct run *r)
{
    /* It must not outlive the supervisor (it is not PID 1 in unit tests); child_exec sets this again after
     * setuid, which clears it. */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != Supervisor.self)
        _exit(0);
    prctl(PR_SET_NAME, "hatchway-zygote", 0, 0, 0);
    child_enter(r);

    struct zygote_order order;
    union {
        char buf[CMSG_SPACE(3 * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {&order, sizeof order};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
    ssize_t n;
    do
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    while (n < 0 && errno == EINTR);
    if (n == 0)
        _exit(0); /* the supervisor no longer needs it */
    if (n < 0)
        child_fail(r->report[1], STAGE_ORDER, errno);
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    if (n != (ssize_t)sizeof order || order.magic != ZYGOTE_MAGIC || order.len < 1 ||
        order.len > Supervisor.shm_size || !c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
        c->cmsg_len != CMSG_LEN(3 * sizeof(int)) || (mh.msg_flags & MSG_CTRUNC))
        child_fail(r->report[1], STAGE_ORDER, EPROTO);
    int fds[3];
    memcpy(fds, CMSG_DATA(c), sizeof fds);
    r->in_fd = fds[0];
    r->out_fd = fds[1];
    r->err_fd = fds[2];
    close(sock);

    /* The supervisor validated the same bytes; parsing them again here is simpler than any other encoding. */
    char *fields = Supervisor.shm, *end = Supervisor.shm + order.len - 1;
    struct request rq;
    char msg[200];
    if (*end != '\0' || (end > fields && end[-1] != '\0') || parse_run(fields, end, &rq, msg, sizeof msg))
        child_fail(r->report[1], STAGE_ORDER, EPROTO);
    if (rq.scratch)
        set_tmpdir(&rq, r->tmpdir_env);
    child_exec(&rq, r);
}

/* --- the parent: preparing, watching and ending a run */

/* Wait for a child to change state, or for hatchway to ask (from outside the container) that the run in flight
 * stop: SIGTERM is passed on to the run, SIGUSR1 kills it. No run can send either: it runs as another uid. */
static void wait_sigchld(uint64_t timeout_ns)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    int sig;
    if (timeout_ns == UINT64_MAX) {
        sig = sigwaitinfo(&set, NULL);
    } else {
        struct timespec ts = {(time_t)(timeout_ns / NS_PER_S), (long)(timeout_ns % NS_PER_S)};
        sig = sigtimedwait(&set, NULL, &ts);
    }
    if (sig == SIGTERM && Supervisor.stop_signal != SIGKILL)
        Supervisor.stop_signal = SIGTERM;
    else if (sig == SIGUSR1)
        Supervisor.stop_signal = SIGKILL;
}

/* Reap every child that has ended, so no zombie is left behind; only the main child's status is kept. __WALL
 * because a run can make children whose exit signal is not SIGCHLD. */
static void reap(struct run *r)
{
    for (;;) {
        int status;
        struct rusage ru;
        pid_t p = wait4(-1, &status, WNOHANG | __WALL, &ru);
        if (p <= 0)
            return;
        if (p == Zygote.pid)
            Zygote.pid = 0; /* it died before its run, which then forks a child instead */
        if (r && p == r->pid && !r->reaped) {
            r->reaped = true;
            r->t_end = now_ns();
            r->wstatus = status;
            r->ru = ru;
        }
    }
}

static bool has_children(void)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    return !(waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT | __WALL) < 0 && errno == ECHILD);
}

/* The processes of the run in proc mode: all descendants of the supervisor (orphans come back to it because it is a
 * subreaper), read from /proc. */
struct proc_entry {
    pid_t pid, ppid;
    uint64_t ticks; /* utime + stime + cutime + cstime */
    uint64_t rss_pages;
    bool mine;
};

static struct {
    struct proc_entry *v;
    size_t n, cap;
} Procs;

static int cmp_pid(const void *a, const void *b)
{
    pid_t x = ((const struct proc_entry *)a)->pid, y = ((const struct proc_entry *)b)->pid;
    return (x > y) - (x < y);
}

static bool parse_stat(const char *buf, struct proc_entry *pe)
{
    /* The command name (field 2) may contain spaces and parentheses; the fields after the last ')' cannot. */
    const char *p = strrchr(buf, ')');
    if (!p)
        return false;
    p++;
    uint64_t field[25] = {0};
    for (int i = 3; i <= 24; i++) {
        while (*p == ' ')
            p++;
        if (!*p)
            return false;
        if (i == 3) {
            p++; /* the state letter */
            continue;
        }
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p)
            return false;
        field[i] = v < 0 ? 0 : (uint64_t)v;
        p = end;
    }
    pe->ppid = (pid_t)field[4];
    pe->ticks = field[14] + field[15] + field[16] + field[17];
    pe->rss_pages = field[24];
    return true;
}

static void scan_procs(void)
{
    Procs.n = 0;
    DIR *d = opendir("/proc");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        struct proc_entry pe = {.pid = (pid_t)atoi(e->d_name)};
        if (pe.pid == Supervisor.self)
            continue;
        char path[64], buf[1024];
        snprintf(path, sizeof path, "/proc/%d/stat", pe.pid);
        if (read_file_at(AT_FDCWD, path, buf, sizeof buf) <= 0 || !parse_stat(buf, &pe))
            continue;
        if (Procs.n == Procs.cap) {
            Procs.cap = Procs.cap ? Procs.cap * 2 : 256;
            Procs.v = realloc(Procs.v, Procs.cap * sizeof *Procs.v);
            if (!Procs.v)
                die("out of memory");
        }
        Procs.v[Procs.n++] = pe;
    }
    closedir(d);
    if (Supervisor.pid1) {
        for (size_t i = 0; i < Procs.n; i++)
            Procs.v[i].mine = true;
        return;
    }
    qsort(Procs.v, Procs.n, sizeof *Procs.v, cmp_pid);
    for (size_t i = 0; i < Procs.n; i++)
        Procs.v[i].mine = Procs.v[i].ppid == Supervisor.self;
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t i = 0; i < Procs.n; i++) {
            if (Procs.v[i].mine)
                continue;
            struct proc_entry key = {.pid = Procs.v[i].ppid};
            struct proc_entry *parent = bsearch(&key, Procs.v, Procs.n, sizeof *Procs.v, cmp_pid);
            if (parent && parent->mine) {
                Procs.v[i].mine = true;
                changed = true;
            }
        }
    }
}

static void kill_descendants(void)
{
    scan_procs();
    for (size_t i = 0; i < Procs.n; i++)
        if (Procs.v[i].mine)
            kill(Procs.v[i].pid, SIGKILL);
}

/* Send `sig` to every process listed in the run's cgroup; returns how many were listed. */
static size_t signal_cgroup(const struct run *r, int sig)
{
    static char *buf;
    static size_t cap;
    int fd = openat(r->cg[CG_PIDS], "cgroup.procs", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t len = 0;
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 16384;
            buf = realloc(buf, cap);
            if (!buf)
                die("out of memory");
        }
        ssize_t k = read(fd, buf + len, cap - len - 1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        len += (size_t)k;
    }
    close(fd);
    buf[len] = '\0';
    size_t n = 0;
    for (char *p = buf; *p;) {
        char *end;
        long pid = strtol(p, &end, 10);
        if (end == p)
            break;
        if (pid > 1 && pid != Supervisor.self) {
            kill((pid_t)pid, sig);
            n++;
        }
        p = end;
        while (*p == '\n')
            p++;
    }
    return n;
}

/* SIGKILL everything of the run. Returns false when nothing of it was found left (cgroup mode only; proc mode
 * answers that through has_children). */
static bool kill_run(struct run *r)
{
    if (!r->reaped)
        kill(r->pid, SIGKILL);
    /* The group the child made with setsid(); one call ends it atomically with respect to fork. */
    kill(-r->pid, SIGKILL);
    if (Supervisor.cgroup_mode)
        return signal_cgroup(r, SIGKILL) > 0;
    if (Supervisor.pid1) {
        /* Everything in the pid namespace but PID 1 itself, atomically: a fork bomb cannot outrun it. */
        kill(-1, SIGKILL);
    } else if (has_children()) {
        /* Never kill(-1) on a host: only our own descendants (setsid() escapes the process group). */
        kill_descendants();
    }
    return true;
}

/* Pass hatchway's SIGTERM on to every process of the run, which may then end in its own time. */
static void terminate_run(const struct run *r)
{
    kill(r->pid, SIGTERM);
    kill(-r->pid, SIGTERM);
    if (Supervisor.cgroup_mode)
        signal_cgroup(r, SIGTERM);
    else if (Supervisor.pid1)
        kill(-1, SIGTERM);
}

static int64_t rusage_cpu_us(const struct rusage *ru)
{
    return ((int64_t)ru->ru_utime.tv_sec + ru->ru_stime.tv_sec) * 1000000 + ru->ru_utime.tv_usec +
           ru->ru_stime.tv_usec;
}

/* CPU time of the processes of this run the supervisor has reaped, in us. */
static uint64_t reaped_cpu_us(const struct run *r)
{
    struct rusage now;
    getrusage(RUSAGE_CHILDREN, &now);
    int64_t us = rusage_cpu_us(&now) - rusage_cpu_us(&r->children_before);
    return us > 0 ? (uint64_t)us : 0;
}

/* CPU time of the run so far, in ns. */
static uint64_t cpu_so_far(const struct run *r, bool scanned)
{
    if (Supervisor.cgroup_mode) {
        uint64_t ns = 0;
        read_counter_u64(r->cg, r->counter, CT_CPU, &ns);
        return ns;
    }
    /* Reaped processes are in RUSAGE_CHILDREN, live ones (with what they reaped themselves) in /proc. */
    if (!scanned)
        scan_procs();
    uint64_t ticks = 0;
    for (size_t i = 0; i < Procs.n; i++)
        if (Procs.v[i].mine)
            ticks += Procs.v[i].ticks;
    return reaped_cpu_us(r) * 1000 + ticks * (NS_PER_S / (uint64_t)Supervisor.clk_tck);
}

static uint64_t rss_so_far(void)
{
    uint64_t pages = 0;
    for (size_t i = 0; i < Procs.n; i++)
        if (Procs.v[i].mine)
            pages += Procs.v[i].rss_pages;
    return pages * (uint64_t)Supervisor.page_size;
}

/* Wait for the main child, enforcing the wall and CPU limits (and proc mode's memory limit) meanwhile. The CPU
 * check is scheduled for the earliest moment the budget could be spent, so a short run is never polled. */
static void watch(struct run *r, const struct request *rq)
{
    uint64_t wall_deadline = rq->wall_ms ? r->t0 + rq->wall_ms * NS_PER_MS : UINT64_MAX;
    uint64_t cpu_limit_ns = rq->cpu_ms * NS_PER_MS;
    uint64_t next_cpu =
        rq->cpu_ms ? r->t0 + max_u64(MIN_CPU_CHECK_NS, cpu_limit_ns / (uint64_t)Supervisor.ncpu) : UINT64_MAX;
    uint64_t next_mem = !Supervisor.cgroup_mode && rq->mem_bytes ? r->t0 + MEM_SAMPLE_NS : UINT64_MAX;
    uint64_t next_kill = UINT64_MAX;
    for (;;) {
        reap(r);
        if (r->reaped)
            return;
        uint64_t now = now_ns();
        if (Supervisor.stop_signal == SIGTERM) {
            Supervisor.stop_signal = 0;
            terminate_run(r);
        } else if (Supervisor.stop_signal == SIGKILL && !r->killed) {
            Supervisor.stop_signal = 0;
            r->killed = true;
            kill_run(r);
            next_kill = now + REKILL_NS;
        }
        if (r->killed) {
            if (now >= next_kill) {
                kill_run(r);
                next_kill = now + REKILL_NS;
            }
        } else if (now >= wall_deadline) {
            r->wall_exceeded = true;
        } else if (now >= next_cpu || now >= next_mem) {
            bool scanned = false;
            if (now >= next_mem) {
                scan_procs();
                scanned = true;
                uint64_t rss = rss_so_far();
                r->peak_sampled = max_u64(r->peak_sampled, rss);
                if (rss > rq->mem_bytes)
                    r->oom_killed = true;
                next_mem = now + MEM_SAMPLE_NS;
            }
            if (!r->oom_killed && now >= next_cpu) {
                uint64_t used = cpu_so_far(r, scanned);
                if (used > cpu_limit_ns)
                    r->cpu_exceeded = true;
                else
                    next_cpu = now + max_u64(MIN_CPU_CHECK_NS, (cpu_limit_ns - used) / (uint64_t)Supervisor.ncpu);
            }
        }
        if (!r->killed && (r->wall_exceeded || r->cpu_exceeded || r->oom_killed)) {
            r->killed = true;
            kill_run(r);
            next_kill = now + REKILL_NS;
        }
        uint64_t until = r->killed ? next_kill : min_u64(wall_deadline, min_u64(next_cpu, next_mem));
        wait_sigchld(until == UINT64_MAX ? UINT64_MAX : (until > now ? until - now : 0));
    }
}

/* Read one record from the report pipe (non-blocking); false when there is none. */
static bool read_report(struct run *r, struct child_report *rep)
{
    ssize_t k;
    do
        k = read(r->report[0], rep, sizeof *rep);
    while (k < 0 && errno == EINTR);
    return k == (ssize_t)sizeof *rep;
}

/* Wait until the child is about to exec (or has failed before) and start the run's clock there. A setup slower
 * than the wall limit leaves the clock at fork, so that watch() ends the run at once. */
static void await_exec(struct run *r, const struct request *rq)
{
    r->t0 = now_ns();
    struct pollfd pfd = {r->report[0], POLLIN, 0};
    int timeout_ms = rq->wall_ms ? (int)rq->wall_ms : -1;
    while (poll(&pfd, 1, timeout_ms) < 0 && errno == EINTR)
        ;
    struct child_report rep;
    if (!read_report(r, &rep))
        return; /* timed out, or the child died before it could say anything */
    if (rep.stage == STAGE_STARTING && rep.t_ns >= r->t0)
        r->t0 = rep.t_ns;
    else if (rep.stage != STAGE_STARTING)
        r->failed = rep;
}

/* After the main child: kill and reap everything the run left (daemons, a fork bomb), so that the next run starts
 * alone and its measurements are its own. */
static void end_leftovers(struct run *r)
{
    uint64_t give_up = now_ns() + KILL_GIVE_UP_NS;
    for (;;) {
        bool listed = kill_run(r);
        reap(r);
        bool left = Supervisor.cgroup_mode ? listed : has_children();
        if (!left)
            return;
        if (now_ns() > give_up) {
            set_error(r, "processes of the run survived SIGKILL for %llu s", KILL_GIVE_UP_NS / NS_PER_S);
            return;
        }
        wait_sigchld(NS_PER_MS);
    }
}

static int open_stdio(struct run *r, const struct request *rq)
{
    const char *in = rq->stdin_path ? rq->stdin_path : "/dev/null";
    /* O_NONBLOCK so that a FIFO cannot hang the supervisor; the program gets a blocking descriptor. */
    r->in_fd = open(in, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (r->in_fd < 0) {
        char what[300];
        snprintf(what, sizeof what, "open stdin %.250s", in);
        set_errno_error(r, what, errno);
        return -1;
    }
    fcntl(r->in_fd, F_SETFL, fcntl(r->in_fd, F_GETFL) & ~O_NONBLOCK);
    const char *paths[2] = {rq->stdout_path, rq->stderr_path};
    int *fds[2] = {&r->out_fd, &r->err_fd};
    for (int i = 0; i < 2; i++) {
        if (i == 1 && paths[1] && paths[0] && strcmp(paths[0], paths[1]) == 0) {
            /* One open file for both, so they share an offset instead of overwriting each other. */
            r->err_fd = fcntl(r->out_fd, F_DUPFD_CLOEXEC, 3);
        } else if (paths[i]) {
            /* O_NOFOLLOW: a link planted by an earlier run must not make root truncate some other file. */
            *fds[i] = open(paths[i], O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        } else {
            *fds[i] = open("/dev/null", O_WRONLY | O_CLOEXEC);
        }
        if (*fds[i] < 0) {
            char what[300];
            snprintf(what, sizeof what, "open %s %.250s", i == 0 ? "stdout" : "stderr",
                     paths[i] ? paths[i] : "/dev/null");
            set_errno_error(r, what, errno);
            return -1;
        }
    }
    return 0;
}

/* mkdir the scratch directory name, 0700 and root's until the run's user is known. Returns 0 or an errno. */
static int make_scratch_dir(const char *name)
{
    if (mkdirat(Supervisor.scratch_fd, name, 0700) < 0) {
        /* Left by an earlier supervisor that used the same directory: it is no run's any more. */
        int e = errno;
        char err[256];
        if (e != EEXIST || remove_tree_at(Supervisor.scratch_fd, name, err, sizeof err) < 0)
            return e;
        if (mkdirat(Supervisor.scratch_fd, name, 0700) < 0)
            return errno;
    }
    /* The umask may have taken bits away; the mode is exactly 0700. */
    if (fchmodat(Supervisor.scratch_fd, name, 0700, 0) < 0) {
        int e = errno;
        unlinkat(Supervisor.scratch_fd, name, AT_REMOVEDIR);
        return e;
    }
    return 0;
}

/* The run's scratch directory (made now unless it was made ahead), handed to the run's user. */
static int make_scratch(struct run *r, struct request *rq, bool made_ahead)
{
    if (!made_ahead) {
        int e = make_scratch_dir(r->name);
        if (e) {
            set_errno_error(r, "make the scratch directory", e);
            return -1;
        }
        r->scratch_made = true;
    }
    if (fchownat(Supervisor.scratch_fd, r->name, rq->uid, rq->gid, AT_SYMLINK_NOFOLLOW) < 0) {
        set_errno_error(r, "hand the scratch directory to the run's user", errno);
        return -1;
    }
    set_tmpdir(rq, r->tmpdir_env);
    return 0;
}

/* rmdir name in every controller where cg[] holds it open, and close those descriptors. */
static void remove_cgroup_dirs(const char *name, int cg[CG_COUNT])
{
    for (int i = 0; i < CG_COUNT; i++) {
        if (cg[i] < 0)
            continue;
        close(cg[i]);
        cg[i] = -1;
        /* Removal can lag the death of the last task by a moment. */
        for (int attempt = 0; attempt < 100; attempt++) {
            if (unlinkat(Supervisor.cg_root[i], name, AT_REMOVEDIR) == 0 || errno == ENOENT)
                break;
            if (errno != EBUSY) {
                fprintf(stderr, "hatchway-supervisor: rmdir %s/%s: %s\n", cg_names[i], name, strerror(errno));
                break;
            }
            struct timespec ms = {0, (long)NS_PER_MS};
            nanosleep(&ms, NULL);
        }
    }
}

/* mkdir name in every controller and open it into cg[]. Returns 0, or an errno with nothing left behind. */
static int make_cgroup_dirs(const char *name, int cg[CG_COUNT], const char **failed_controller)
{
    for (int i = 0; i < CG_COUNT; i++) {
        /* An existing directory was left by an earlier supervisor; reusing it would mix its counters in. */
        int e = 0;
        if (mkdirat(Supervisor.cg_root[i], name, 0755) < 0 &&
            (errno != EEXIST || unlinkat(Supervisor.cg_root[i], name, AT_REMOVEDIR) < 0 ||
             mkdirat(Supervisor.cg_root[i], name, 0755) < 0))
            e = errno;
        if (!e) {
            cg[i] = openat(Supervisor.cg_root[i], name, O_PATH | O_DIRECTORY | O_CLOEXEC);
            if (cg[i] < 0) {
                e = errno;
                unlinkat(Supervisor.cg_root[i], name, AT_REMOVEDIR);
            }
        }
        if (e) {
            *failed_controller = cg_names[i];
            remove_cgroup_dirs(name, cg);
            return e;
        }
    }
    return 0;
}

static void run_name(char *buf, size_t size, uint64_t n) { snprintf(buf, size, "run-%llu", (unsigned long long)n); }

/* Write a memory limit (0: none) over the one in place; memory+swap must stay >= memory all along, so it is raised
 * first and lowered last. Returns 0 or an errno, with *file the file that failed. */
static int set_memory_limit(int memcg, uint64_t from, uint64_t to, const char **file)
{
    if (from == to)
        return 0;
    char value[32];
    snprintf(value, sizeof value, to ? "%llu" : "-1", (unsigned long long)to);
    bool raising = to == 0 || (from != 0 && to > from);
    int e = 0;
    if (raising && Supervisor.has_memsw)
        e = write_file_at(memcg, *file = "memory.memsw.limit_in_bytes", value);
    if (!e)
        e = write_file_at(memcg, *file = "memory.limit_in_bytes", value);
    if (!e && !raising && Supervisor.has_memsw)
        e = write_file_at(memcg, *file = "memory.memsw.limit_in_bytes", value);
    return e;
}

static int set_pids_limit(int pidscg, uint64_t from, uint64_t to, const char **file)
{
    if (from == to)
        return 0;
    char value[32];
    snprintf(value, sizeof value, to ? "%llu" : "max", (unsigned long long)to);
    return write_file_at(pidscg, *file = "pids.max", value);
}

/* What the next run needs that does not depend on its request, made after the previous answer while hatchway
 * reads it: its cgroups, with the previous request's limits already written (a test suite's runs share theirs),
 * its scratch directory, and a zygote. */
static struct {
    char name[32]; /* run-<n>; "" until prepare_next names it */
    char *scratch_path, *tmpdir_env;
    bool cg_ready;
    int cg[CG_COUNT];
    int counter[CT_COUNT];
    uint64_t mem_bytes, procs; /* the limits written in cg, 0 for none */
    bool scratch_made;
} Next = {.cg = {-1, -1, -1}, .counter = {-1, -1, -1}};

static void name_next(void)
{
    if (Next.name[0])
        return;
    run_name(Next.name, sizeof Next.name, Supervisor.runs + 1);
    if (Supervisor.scratch_dir && (asprintf(&Next.scratch_path, "%s/%s", Supervisor.scratch_dir, Next.name) < 0 ||
                          asprintf(&Next.tmpdir_env, "TMPDIR=%s", Next.scratch_path) < 0))
        die("out of memory");
}

/* The next run's cgroups with every limit that does not depend on its request. Returns 0 or an errno. */
static int make_next_cgroups(const char **failed)
{
    int e = make_cgroup_dirs(Next.name, Next.cg, failed);
    if (e)
        return e;
    *failed = "memory";
    if (Supervisor.reenable_oom_killer)
        e = write_file_at(Next.cg[CG_MEMORY], "memory.oom_control", "0");
    if (!e)
        e = set_memory_limit(Next.cg[CG_MEMORY], 0, Supervisor.last_mem_bytes, failed);
    if (!e)
        e = set_pids_limit(Next.cg[CG_PIDS], 0, Supervisor.last_procs, failed);
    if (e) {
        remove_cgroup_dirs(Next.name, Next.cg);
        return e;
    }
    Next.mem_bytes = Supervisor.last_mem_bytes;
    Next.procs = Supervisor.last_procs;
    open_counters(Next.cg, Next.counter);
    Next.cg_ready = true;
    return 0;
}

/* A zygote for the next run. On any failure there is simply none: the run forks its child as it comes. */
static void spawn_zygote(void)
{
    int sock[2], report[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sock) < 0)
        return;
    if (pipe2(report, O_CLOEXEC | O_NONBLOCK) < 0) {
        close(sock[0]);
        close(sock[1]);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(sock[0]);
        close(report[0]);
        struct run r;
        memset(&r, 0, sizeof r);
        memcpy(r.cg, Next.cg, sizeof r.cg);
        r.report[1] = report[1];
        r.scratch_path = Next.scratch_path;
        r.tmpdir_env = Next.tmpdir_env;
        zygote_main(sock[1], &r);
    }
    close(sock[1]);
    close(report[1]);
    if (pid < 0) {
        close(sock[0]);
        close(report[0]);
        return;
    }
    Zygote.pid = pid;
    Zygote.sock = sock[0];
    Zygote.report = report[0];
    snprintf(Zygote.name, sizeof Zygote.name, "%s", Next.name);
}

/* End the zygote if there is one, and forget it. */
static void discard_zygote(void)
{
    if (Zygote.pid > 0) {
        kill(Zygote.pid, SIGKILL);
        while (waitpid(Zygote.pid, NULL, __WALL) < 0 && errno == EINTR)
            ;
    }
    if (Zygote.sock >= 0)
        close(Zygote.sock);
    if (Zygote.report >= 0)
        close(Zygote.report);
    Zygote.pid = 0;
    Zygote.sock = Zygote.report = -1;
    Zygote.name[0] = '\0';
}

/* Idle work, done before the next request is read. A failure here costs only speed: the run then makes what is
 * missing itself, and reports the error if it fails again. */
static void prepare_next(void)
{
    name_next();
    const char *ignored;
    if (Supervisor.cgroup_mode && !Next.cg_ready)
        make_next_cgroups(&ignored);
    if (Supervisor.scratch_fd >= 0 && !Next.scratch_made)
        Next.scratch_made = make_scratch_dir(Next.name) == 0;
    if (Supervisor.shm && Zygote.pid == 0 && (!Supervisor.cgroup_mode || Next.cg_ready)) {
        discard_zygote(); /* the descriptors of one that died */
        spawn_zygote();
    }
}

/* The run's cgroups, made ahead or now, and its limits: only those not already in place are written. */
static int make_cgroups(struct run *r, const struct request *rq, bool made_ahead, uint64_t mem_bytes, uint64_t procs)
{
    const char *file = "";
    int e = 0;
    if (!made_ahead) {
        const char *controller = "";
        e = make_cgroup_dirs(r->name, r->cg, &controller);
        if (e) {
            char what[64];
            snprintf(what, sizeof what, "mkdir %s cgroup", controller);
            set_errno_error(r, what, e);
            return -1;
        }
        mem_bytes = procs = 0; /* a fresh cgroup has no limits */
        if (Supervisor.reenable_oom_killer)
            e = write_file_at(r->cg[CG_MEMORY], file = "memory.oom_control", "0");
    }
    if (!e)
        e = set_memory_limit(r->cg[CG_MEMORY], mem_bytes, rq->mem_bytes, &file);
    if (!e)
        e = set_pids_limit(r->cg[CG_PIDS], procs, rq->procs, &file);
    if (e) {
        char what[80];
        snprintf(what, sizeof what, "write %s", file);
        set_errno_error(r, what, e);
        return -1;
    }
    return 0;
}

/* Peak memory, CPU time and the OOM verdict, once every process of the run is gone. */
static void measure(struct run *r, uint64_t *cpu_us, uint64_t *memory_bytes)
{
    if (Supervisor.cgroup_mode) {
        uint64_t ns = 0, peak = 0, ooms = 0, failcnt = 0;
        read_counter_u64(r->cg, r->counter, CT_CPU, &ns);
        read_counter_u64(r->cg, r->counter, CT_PEAK, &peak);
        char text[512];
        bool have_field = read_counter(r->cg, r->counter, CT_OOM, text, sizeof text) > 0 &&
                          find_key_u64(text, "oom_kill", &ooms);
        if (have_field) {
            if (ooms > 0)
                r->oom_killed = true;
        } else if (r->reaped && WIFSIGNALED(r->wstatus) && WTERMSIG(r->wstatus) == SIGKILL &&
                   read_u64_at(r->cg[CG_MEMORY], "memory.failcnt", &failcnt) && failcnt > 0) {
            /* Kernels before 4.13 do not count OOM kills per cgroup. */
            r->oom_killed = true;
        }
        *cpu_us = ns / 1000;
        *memory_bytes = peak;
        return;
    }
    *cpu_us = reaped_cpu_us(r);
    /* ru_maxrss of RUSAGE_CHILDREN is the largest child ever, not this run's: use the main child's own. */
    uint64_t maxrss = r->reaped ? (uint64_t)r->ru.ru_maxrss * 1024 : 0;
    *memory_bytes = max_u64(maxrss, r->peak_sampled);
}

static void emit_run_result(const struct run *r, const char *id, uint64_t cpu_us, uint64_t wall_us, uint64_t mem)
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

static bool file_reached(int fd, uint64_t limit)
{
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size >= limit;
}

/* Clean-up that follows a run's answer: what failed is kept here, tried again before the next run and reported in
 * its answer. */
static struct {
    char error[400]; /* the first failure, "" if none */
    char scratch[32]; /* a scratch directory left to remove, "" if none */
    bool wipe;        /* the --wipe directories are left to empty */
} Dirty;

static void clean_up(const char *scratch, bool wipe)
{
    char err[300];
    if (scratch && remove_tree_at(Supervisor.scratch_fd, scratch, err, sizeof err) < 0) {
        snprintf(Dirty.scratch, sizeof Dirty.scratch, "%s", scratch);
        if (!Dirty.error[0])
            snprintf(Dirty.error, sizeof Dirty.error, "remove the scratch directory %.32s: %.300s", scratch, err);
    }
    for (size_t i = 0; wipe && i < Supervisor.nwipe; i++)
        if (empty_dir(Supervisor.wipe_fd[i], err, sizeof err) < 0) {
            Dirty.wipe = true;
            if (!Dirty.error[0])
                snprintf(Dirty.error, sizeof Dirty.error, "wipe %.80s: %.300s", Supervisor.wipe_path[i], err);
        }
}

/* Try again what failed after the previous answer. Returns false, with the error still in Dirty, if it fails
 * again: leftovers of another run may then be in reach, and the run must not start. */
static bool clean_up_again(char *first_error, size_t size)
{
    snprintf(first_error, size, "%s", Dirty.error);
    char scratch[sizeof Dirty.scratch];
    snprintf(scratch, sizeof scratch, "%s", Dirty.scratch);
    bool wipe = Dirty.wipe;
    memset(&Dirty, 0, sizeof Dirty);
    clean_up(scratch[0] ? scratch : NULL, wipe);
    return !Dirty.error[0];
}

/* Give the answer just written a head start over the idle work: on a machine with few CPUs the relay that carries
 * it to hatchway and the idle work slow each other down. Returns at once when a request is waiting. */
static void let_the_answer_go(void)
{
    if (In.len > In.start)
        return;
    struct pollfd pfd = {STDIN_FILENO, POLLIN, 0};
    struct timespec ts = {0, (long)IDLE_DELAY_NS};
    while (ppoll(&pfd, 1, &ts, NULL) < 0 && errno == EINTR)
        ;
}

/* Hand the request to the zygote, which becomes the run's main process. False if there is none, or it cannot take
 * the order (it died); the run then forks a child instead. */
static bool order_zygote(struct run *r, const char *fields, const char *end)
{
    size_t len = (size_t)(end - fields) + 1;
    if (Zygote.pid <= 0 || strcmp(Zygote.name, r->name) != 0 || len > Supervisor.shm_size)
        return false;
    memcpy(Supervisor.shm, fields, len);
    struct zygote_order order = {ZYGOTE_MAGIC, (uint32_t)len};
    int fds[3] = {r->in_fd, r->out_fd, r->err_fd};
    union {
        char buf[CMSG_SPACE(sizeof fds)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {&order, sizeof order};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    /* A few bytes into an empty socket: never blocks. A zygote that died is EPIPE (or ECONNRESET). */
    ssize_t n;
    do
        n = sendmsg(Zygote.sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof order)
        return false;
    r->pid = Zygote.pid;
    r->report[0] = Zygote.report;
    Zygote.report = -1;
    Zygote.pid = 0;
    discard_zygote(); /* only closes its socket now: what was sent stays readable */
    return true;
}

static void handle_run(struct request *rq, const char *fields, const char *end)
{
    struct run r;
    memset(&r, 0, sizeof r);
    r.in_fd = r.out_fd = r.err_fd = -1;
    r.report[0] = r.report[1] = -1;
    for (int i = 0; i < CG_COUNT; i++)
        r.cg[i] = -1;
    for (int i = 0; i < CT_COUNT; i++)
        r.counter[i] = -1;

    /* Take what was made ahead for this run; whatever the run does not use goes with it afterwards. */
    Supervisor.runs++;
    name_next();
    snprintf(r.name, sizeof r.name, "%s", Next.name);
    r.scratch_path = Next.scratch_path;
    r.tmpdir_env = Next.tmpdir_env;
    r.scratch_made = Next.scratch_made;
    bool cg_ahead = Next.cg_ready;
    if (cg_ahead) {
        memcpy(r.cg, Next.cg, sizeof r.cg);
        memcpy(r.counter, Next.counter, sizeof r.counter);
    }
    uint64_t mem_ahead = Next.mem_bytes, procs_ahead = Next.procs;
    memset(&Next, 0, sizeof Next);
    for (int i = 0; i < CG_COUNT; i++)
        Next.cg[i] = -1;
    for (int i = 0; i < CT_COUNT; i++)
        Next.counter[i] = -1;
    Supervisor.last_mem_bytes = rq->mem_bytes;
    Supervisor.last_procs = rq->procs;

    char earlier[400] = "", note[500] = "";
    bool usable = true;
    if (Dirty.error[0]) {
        usable = clean_up_again(earlier, sizeof earlier);
        if (usable)
            snprintf(note, sizeof note, "the clean-up after the previous run failed, then succeeded before this run: %s",
                     earlier);
        else
            set_error(&r, "the clean-up after the previous run failed: %s", Dirty.error);
    }

    bool forked = false;
    uint64_t cpu_us = 0, wall_us = 0, mem = 0;
    if (!usable || open_stdio(&r, rq) < 0 || (rq->scratch && make_scratch(&r, rq, r.scratch_made) < 0) ||
        (Supervisor.cgroup_mode && make_cgroups(&r, rq, cg_ahead, mem_ahead, procs_ahead) < 0)) {
        r.failure = FAIL_SETUP;
    } else {
        getrusage(RUSAGE_CHILDREN, &r.children_before);
        forked = order_zygote(&r, fields, end);
        if (!forked) {
            /* Nothing of the zygote may stay in the run's cgroups, nor count in its CPU time. */
            discard_zygote();
            getrusage(RUSAGE_CHILDREN, &r.children_before);
            if (pipe2(r.report, O_CLOEXEC | O_NONBLOCK) < 0) {
                r.failure = FAIL_SETUP;
                set_errno_error(&r, "pipe", errno);
            } else {
                r.pid = fork();
                if (r.pid == 0) {
                    child_enter(&r);
                    child_exec(rq, &r);
                }
                if (r.pid < 0) {
                    r.failure = FAIL_SETUP;
                    set_errno_error(&r, "fork", errno);
                } else {
                    forked = true;
                }
                close(r.report[1]);
                r.report[1] = -1;
            }
        }
        if (forked) {
            await_exec(&r, rq);
            watch(&r, rq);
            end_leftovers(&r);
            /* The child is dead, so the pipe holds its failure or nothing (exec succeeded). */
            struct child_report rep = r.failed;
            while (rep.stage == 0 || rep.stage == STAGE_STARTING)
                if (!read_report(&r, &rep)) {
                    rep.stage = 0;
                    break;
                }
            if (rep.stage != 0) {
                char what[300];
                if (rep.stage == STAGE_EXEC) {
                    r.failure = FAIL_EXEC;
                    r.exit_code_override = rep.err == ENOENT || rep.err == ENOTDIR ? 127 : 126;
                    snprintf(what, sizeof what, "exec %.250s", rq->argv[0]);
                } else {
                    r.failure = FAIL_SETUP;
                    if (rep.stage == STAGE_CHDIR)
                        snprintf(what, sizeof what, "chdir %.250s", rq->scratch ? r.scratch_path : rq->cwd);
                    else
                        snprintf(what, sizeof what, "%s", stage_name(rep.stage));
                }
                set_errno_error(&r, what, rep.err);
            }
            wall_us = (r.t_end - r.t0) / 1000;
            measure(&r, &cpu_us, &mem);
            if (rq->cpu_ms && (cpu_us > rq->cpu_ms * 1000 ||
                               (WIFSIGNALED(r.wstatus) && WTERMSIG(r.wstatus) == SIGXCPU)))
                r.cpu_exceeded = true;
            if (rq->fsize_bytes && ((WIFSIGNALED(r.wstatus) && WTERMSIG(r.wstatus) == SIGXFSZ) ||
                                    file_reached(r.out_fd, rq->fsize_bytes) ||
                                    file_reached(r.err_fd, rq->fsize_bytes)))
                r.output_exceeded = true;
        }
    }
    if (note[0])
        append_error(&r, note);

    emit_run_result(&r, rq->id, cpu_us, wall_us, mem);
    let_the_answer_go();

    /* After the answer, while hatchway reads it: every process of the run is dead, and the next request is read
     * only when this is done. A failure is reported in the next run's answer (see Dirty). */
    discard_zygote(); /* one this run did not use: it is in the run's cgroups */
    int fds[] = {r.in_fd, r.out_fd, r.err_fd, r.report[0], r.report[1]};
    for (size_t i = 0; i < sizeof fds / sizeof *fds; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    clean_up(r.scratch_made ? r.name : NULL, forked);
    close_counters(r.counter);
    if (Supervisor.cgroup_mode)
        remove_cgroup_dirs(r.name, r.cg);
    free(r.scratch_path);
    free(r.tmpdir_env);
    size_t len = (size_t)(end - fields) + 1;
    if (len > (1u << 20) && len <= Supervisor.shm_size)
        madvise(Supervisor.shm, len, MADV_REMOVE); /* a huge request's copy need not stay in memory */
    prepare_next();
}

/* ---------------------------------------------------------------- start-up and the request loop */

static void emit_error(const char *msg)
{
    struct sbuf b = {0};
    sb_puts(&b, "{\"error\":");
    sb_json_string(&b, msg);
    sb_puts(&b, "}");
    emit(&b);
    free(b.p);
}

static int open_dir(const char *path, const char *what)
{
    int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        die("%s %s: %s", what, path, strerror(errno));
    return fd;
}

static void setup_cgroups(const char *dir)
{
    int root = open_dir(dir, "--cgroup");
    for (int i = 0; i < CG_COUNT; i++) {
        Supervisor.cg_root[i] = openat(root, cg_names[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (Supervisor.cg_root[i] < 0)
            die("--cgroup %s/%s: %s", dir, cg_names[i], strerror(errno));
    }
    close(root);
    static const struct {
        int ctrl;
        const char *file;
    } required[] = {
        {CG_MEMORY, "memory.limit_in_bytes"}, {CG_MEMORY, "memory.max_usage_in_bytes"},
        {CG_MEMORY, "cgroup.procs"},          {CG_PIDS, "pids.max"},
        {CG_CPUACCT, "cpuacct.usage"},
    };
    for (size_t i = 0; i < sizeof required / sizeof *required; i++)
        if (faccessat(Supervisor.cg_root[required[i].ctrl], required[i].file, F_OK, 0) < 0)
            die("--cgroup %s/%s/%s: %s (a cgroup v1 directory is needed)", dir, cg_names[required[i].ctrl],
                required[i].file, strerror(errno));
    Supervisor.has_memsw = faccessat(Supervisor.cg_root[CG_MEMORY], "memory.memsw.limit_in_bytes", F_OK, 0) == 0;
    char text[512];
    uint64_t disabled = 0;
    Supervisor.reenable_oom_killer =
        read_file_at(Supervisor.cg_root[CG_MEMORY], "memory.oom_control", text, sizeof text) > 0 &&
        find_key_u64(text, "oom_kill_disable", &disabled) && disabled;
    Supervisor.cgroup_mode = true;
}

static void on_sigchld(int sig) { (void)sig; }

static void usage(void)
{
    die("usage: hatchway-supervisor [--cgroup DIR] [--scratch DIR] [--wipe DIR]...");
}

int main(int argc, char **argv)
{
    const char *cgroup_dir = NULL;
    Supervisor.self = getpid();
    Supervisor.pid1 = Supervisor.self == 1;
    /* Our stdin and stdout are the result channel: no program may inherit them. */
    for (int fd = 0; fd <= 2; fd++)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    Supervisor.wipe_path = calloc((size_t)argc, sizeof *Supervisor.wipe_path);
    Supervisor.wipe_fd = calloc((size_t)argc, sizeof *Supervisor.wipe_fd);
    if (!Supervisor.wipe_path || !Supervisor.wipe_fd)
        die("out of memory");
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *val = argv[++i];
        if (strcmp(opt, "--cgroup") == 0 && !Supervisor.cgroup_mode) {
            cgroup_dir = val;
            setup_cgroups(val);
        } else if (strcmp(opt, "--scratch") == 0 && Supervisor.scratch_fd < 0) {
            Supervisor.scratch_dir = val;
            Supervisor.scratch_fd = open_dir(val, "--scratch");
        } else if (strcmp(opt, "--wipe") == 0) {
            /* A directory this sandbox lacks (gVisor has no /dev/mqueue) has nothing to wipe. */
            int fd = open(val, O_PATH | O_DIRECTORY | O_CLOEXEC);
            if (fd < 0 && errno != ENOENT)
                die("--wipe %s: %s", val, strerror(errno));
            if (fd >= 0) {
                Supervisor.wipe_path[Supervisor.nwipe] = val;
                Supervisor.wipe_fd[Supervisor.nwipe++] = fd;
            }
        } else {
            usage();
        }
    }
    /* Orphaned daemons of a run come back to us, so we can reap them and count their CPU time. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0 && !Supervisor.pid1)
        die("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
    /* SIGCHLD stays blocked and is only collected with sigtimedwait. It must not be SIG_IGN, or the kernel would
     * reap children before we read their status; a (never run) handler rather than SIG_DFL so that no kernel,
     * gVisor's included, may discard it as ignored. */
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL); /* whatever our parent ignored, a program must not inherit (see child_main) */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sigaction(SIGCHLD, &sa, NULL);
    /* hatchway's requests to stop a run: blocked and collected like SIGCHLD. A handler, because the kernel drops
     * a signal from outside the container that PID 1 leaves at SIG_DFL. */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigaddset(&chld, SIGTERM);
    sigaddset(&chld, SIGUSR1);
    sigprocmask(SIG_BLOCK, &chld, NULL);

    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct caps[2];
    Supervisor.can_drop_bounding_set =
        syscall(SYS_capget, &hdr, caps) == 0 && (caps[0].effective & (1u << CAP_SETPCAP));

    cpu_set_t set;
    Supervisor.ncpu = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
    if (Supervisor.ncpu < 1)
        Supervisor.ncpu = 1;
    Supervisor.clk_tck = sysconf(_SC_CLK_TCK);
    if (Supervisor.clk_tck < 1)
        Supervisor.clk_tck = 100;
    Supervisor.page_size = sysconf(_SC_PAGESIZE);

    /* Making the first run's cgroups now also proves that the cgroup directories are usable, before saying ready. */
    name_next();
    if (Supervisor.cgroup_mode) {
        const char *controller = "";
        int e = make_next_cgroups(&controller);
        if (e)
            die("cannot make cgroups in --cgroup %s/%s: %s", cgroup_dir, controller, strerror(e));
    }
    /* Zygotes read their request here. Without it there are none, and every run forks its child on request. */
    Supervisor.shm_size = MAX_REQUEST_BYTES + (1u << 20);
    Supervisor.shm =
        mmap(NULL, Supervisor.shm_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (Supervisor.shm == MAP_FAILED)
        Supervisor.shm = NULL;

    struct sbuf out = {0};
    sb_printf(&out, "{\"ready\":true,\"version\":%d,\"mode\":\"%s\"}", PROTOCOL_VERSION,
              Supervisor.cgroup_mode ? "cgroup" : "proc");
    emit(&out);
    prepare_next();

    for (;;) {
        char *begin = NULL, *end = NULL;
        enum read_result rr = read_request(&begin, &end);
        reap(NULL);
        if (rr == REQ_EOF)
            break;
        if (rr == REQ_TOO_LARGE) {
            emit_error("request is larger than 8 MiB");
            continue;
        }
        if (begin == end) {
            emit_error("empty request: the first field must be a verb");
            continue;
        }
        const char *verb = begin;
        char *fields = begin + strlen(begin) + 1;
        if (strcmp(verb, "ping") == 0) {
            if (fields < end) {
                emit_error("ping takes no fields");
                continue;
            }
            sb_puts(&out, "{\"pong\":true}");
            emit(&out);
        } else if (strcmp(verb, "run") == 0) {
            struct request rq;
            char msg[200];
            const char *bad = parse_run(fields, end, &rq, msg, sizeof msg);
            if (bad)
                emit_error(bad);
            else
                handle_run(&rq, fields, end);
            free_request(&rq);
        } else {
            char msg[120];
            snprintf(msg, sizeof msg, "unknown verb %.60s", verb);
            emit_error(msg);
        }
    }
    /* hatchway closed our stdin: the container is done. Nothing of a run is alive between requests, only the zygote,
     * but as PID 1 make sure of it before the namespace goes. The cgroup directories outlive the container (and a
     * scratch directory may be a volume): leave none. */
    discard_zygote();
    close_counters(Next.counter);
    if (Next.cg_ready)
        remove_cgroup_dirs(Next.name, Next.cg);
    char err[300];
    if (Next.scratch_made && remove_tree_at(Supervisor.scratch_fd, Next.name, err, sizeof err) < 0)
        fprintf(stderr, "hatchway-supervisor: remove the scratch directory %s: %s\n", Next.name, err);
    if (Dirty.error[0] && !clean_up_again(err, sizeof err))
        fprintf(stderr, "hatchway-supervisor: clean-up after the last run: %s\n", Dirty.error);
    if (Supervisor.pid1)
        kill(-1, SIGKILL);
    return 0;
}
