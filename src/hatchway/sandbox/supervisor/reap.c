/* Reaping, killing and accounting: waiting for children, ending every process of a run, and what it used. */
#include "supervisor.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Wait for a child to change state, or for hatchway to ask (from outside the container) that the run in flight
 * stop: SIGTERM is passed on to the run, SIGUSR1 kills it. No run can send either: it runs as another uid. */
void wait_sigchld(uint64_t timeout_ns)
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
void reap(struct run *r)
{
    for (;;) {
        int status;
        struct rusage ru;
        pid_t p = wait4(-1, &status, WNOHANG | __WALL, &ru);
        if (p <= 0)
            return;
        zygote_reaped(p);
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

void scan_procs(void)
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

/* SIGKILL everything of the run. Returns false when nothing of it was found left (cgroup mode only; proc mode
 * answers that through has_children). */
bool kill_run(struct run *r)
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
void terminate_run(const struct run *r)
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
uint64_t cpu_so_far(const struct run *r, bool scanned)
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

uint64_t rss_so_far(void)
{
    uint64_t pages = 0;
    for (size_t i = 0; i < Procs.n; i++)
        if (Procs.v[i].mine)
            pages += Procs.v[i].rss_pages;
    return pages * (uint64_t)Supervisor.page_size;
}

/* With --sandbox-meminfo: the sandbox's anonymous and shared memory (System V segments, tmpfs files) now, in bytes,
 * from its own /proc/meminfo; 0 if that cannot be read. */
uint64_t sandbox_memory(void)
{
    char text[8192];
    uint64_t anon_kb = 0, shmem_kb = 0;
    if (read_file_at(AT_FDCWD, "/proc/meminfo", text, sizeof text) <= 0 ||
        !find_key_u64(text, "AnonPages:", &anon_kb) || !find_key_u64(text, "Shmem:", &shmem_kb))
        return 0;
    return (anon_kb + shmem_kb) * 1024;
}

/* How much more of it there is than just before the run (0 if less, or if either could not be read). */
uint64_t sandbox_growth(const struct run *r)
{
    uint64_t now = r->sandbox_base ? sandbox_memory() : 0;
    return now > r->sandbox_base ? now - r->sandbox_base : 0;
}

/* After the main child: kill and reap everything the run left (daemons, a fork bomb), so that the next run starts
 * alone and its measurements are its own. */
void end_leftovers(struct run *r)
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

/* Peak memory, CPU time and the OOM verdict, once every process of the run is gone. */
void measure(struct run *r, uint64_t *cpu_us, uint64_t *memory_bytes)
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
