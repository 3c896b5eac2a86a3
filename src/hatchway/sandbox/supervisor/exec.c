/* The run's process between fork and exec: it leaves the supervisor's state, joins the run's cgroups, takes its
 * files, limits and user, and execs; every failure before exec goes back on the report pipe. */
#include "supervisor.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
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

const char *stage_name(int stage)
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

void child_fail(int fd, int stage, int err)
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
void child_enter(const struct run *r)
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
void child_exec(const struct request *rq, const struct run *r)
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
    /* The stack the program's main thread may grow to; the memory limit still bounds it with everything else. */
    if (rq->stack_bytes && set_rlimit(RLIMIT_STACK, (rlim_t)rq->stack_bytes, (rlim_t)rq->stack_bytes) < 0)
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
