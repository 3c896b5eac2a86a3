/* Start-up and the request loop. */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

struct supervisor Supervisor = {.scratch_fd = -1, .cg_root = {-1, -1, -1}};

static void on_sigchld(int sig) { (void)sig; }

static void usage(void)
{
    die("usage: hatchway-supervisor [--cgroup DIR] [--scratch DIR] [--wipe DIR]... [--wipe-ipc] [--sandbox-meminfo]");
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
        if (strcmp(opt, "--wipe-ipc") == 0) {
            Supervisor.wipe_ipc = true;
            continue;
        }
        if (strcmp(opt, "--sandbox-meminfo") == 0) {
            Supervisor.sandbox_meminfo = true;
            continue;
        }
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
    if (Supervisor.wipe_ipc)
        setup_ipc();
    /* Orphaned daemons of a run come back to us, so we can reap them and count their CPU time. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0 && !Supervisor.pid1)
        die("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
    /* SIGCHLD stays blocked and is only collected with sigtimedwait. It must not be SIG_IGN, or the kernel would
     * reap children before we read their status; a (never run) handler rather than SIG_DFL so that no kernel,
     * gVisor's included, may discard it as ignored. */
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL); /* whatever our parent ignored, a program must not inherit (see child_enter) */
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
