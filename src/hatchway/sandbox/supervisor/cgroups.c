/* cgroup mode: the --cgroup directories, each run's cgroups and their limits, and the counters read after a
 * run. */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const cg_names[CG_COUNT] = {"memory", "pids", "cpuacct"};

static const struct {
    int cg;
    const char *file;
} counter_files[CT_COUNT] = {
    {CG_CPUACCT, "cpuacct.usage"}, {CG_MEMORY, "memory.max_usage_in_bytes"}, {CG_MEMORY, "memory.oom_control"}};

void setup_cgroups(const char *dir)
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

/* Open the counter files of the cgroups in cg; one that fails is -1 and read by name instead. */
static void open_counters(const int cg[CG_COUNT], int counter[CT_COUNT])
{
    for (int i = 0; i < CT_COUNT; i++)
        counter[i] = openat(cg[counter_files[i].cg], counter_files[i].file, O_RDONLY | O_CLOEXEC);
}

void close_counters(int counter[CT_COUNT])
{
    for (int i = 0; i < CT_COUNT; i++) {
        if (counter[i] >= 0)
            close(counter[i]);
        counter[i] = -1;
    }
}

ssize_t read_counter(const int cg[CG_COUNT], const int counter[CT_COUNT], int which, char *buf, size_t size)
{
    if (counter[which] >= 0)
        return read_open_file(counter[which], buf, size);
    return read_file_at(cg[counter_files[which].cg], counter_files[which].file, buf, size);
}

bool read_counter_u64(const int cg[CG_COUNT], const int counter[CT_COUNT], int which, uint64_t *out)
{
    char buf[64];
    return read_counter(cg, counter, which, buf, sizeof buf) > 0 && parse_u64_text(buf, out);
}

/* rmdir name in every controller where cg[] holds it open, and close those descriptors. */
void remove_cgroup_dirs(const char *name, int cg[CG_COUNT])
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

/* The next run's cgroups with every limit that does not depend on its request. Returns 0 or an errno. */
int make_next_cgroups(const char **failed)
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

/* The run's cgroups, made ahead or now, and its limits: only those not already in place are written. */
int make_cgroups(struct run *r, const struct request *rq, bool made_ahead, uint64_t mem_bytes, uint64_t procs)
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

/* Send `sig` to every process listed in the run's cgroup; returns how many were listed. */
size_t signal_cgroup(const struct run *r, int sig)
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
