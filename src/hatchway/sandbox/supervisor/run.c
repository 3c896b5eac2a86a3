/* One run, from its request to its answer: files, scratch directory, cgroups, the process (a zygote or a fork),
 * its limits while it runs, and the measurements. */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Add a note after whatever error the run has. */
static void append_error(struct run *r, const char *note)
{
    size_t n = strlen(r->error);
    snprintf(r->error + n, sizeof r->error - n, "%s%s", n ? "; " : "", note);
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

/* Wait for the main child, enforcing the wall and CPU limits (and proc mode's memory limit) meanwhile. The CPU
 * check is scheduled for the earliest moment the budget could be spent, so a short run is never polled. */
static void watch(struct run *r, const struct request *rq)
{
    uint64_t wall_deadline = rq->wall_ms ? r->t0 + rq->wall_ms * NS_PER_MS : UINT64_MAX;
    uint64_t cpu_limit_ns = rq->cpu_ms * NS_PER_MS;
    uint64_t next_cpu =
        rq->cpu_ms ? r->t0 + max_u64(MIN_CPU_CHECK_NS, cpu_limit_ns / (uint64_t)Supervisor.ncpu) : UINT64_MAX;
    uint64_t next_mem = !Supervisor.cgroup_mode && rq->mem_bytes ? r->t0 + MEM_SAMPLE_NS : UINT64_MAX;
    uint64_t next_meminfo = r->t0 + MEMINFO_SAMPLE_NS;
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
                if (Supervisor.sandbox_meminfo && now >= next_meminfo) {
                    rss = max_u64(rss, sandbox_growth(r));
                    next_meminfo = now + MEMINFO_SAMPLE_NS;
                }
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

static bool file_reached(int fd, uint64_t limit)
{
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size >= limit;
}

void handle_run(struct request *rq, const char *fields, const char *end)
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
    r.sandbox_base = Next.sandbox_base;
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
            snprintf(note, sizeof note,
                     "the clean-up after the previous run failed, then succeeded before this run: %s", earlier);
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
            if (Supervisor.sandbox_meminfo && !Supervisor.cgroup_mode) {
                /* What the run left that no process maps (segments, tmpfs files) was its memory too, however
                 * briefly it ran: the sampling may never have seen it. */
                uint64_t grown = sandbox_growth(&r);
                mem = max_u64(mem, grown);
                if (rq->mem_bytes && grown > rq->mem_bytes)
                    r.oom_killed = true;
            }
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
    clean_up(r.scratch_made ? r.name : NULL, forked, rq->uid);
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
