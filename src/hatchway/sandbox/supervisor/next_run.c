/* Idle work: what the next run needs that does not depend on its request, made after the previous answer. */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

struct next_run Next = {.cg = {-1, -1, -1}, .counter = {-1, -1, -1}};

static void run_name(char *buf, size_t size, uint64_t n) { snprintf(buf, size, "run-%llu", (unsigned long long)n); }

void name_next(void)
{
    if (Next.name[0])
        return;
    run_name(Next.name, sizeof Next.name, Supervisor.runs + 1);
    if (Supervisor.scratch_dir &&
        (asprintf(&Next.scratch_path, "%s/%s", Supervisor.scratch_dir, Next.name) < 0 ||
         asprintf(&Next.tmpdir_env, "TMPDIR=%s", Next.scratch_path) < 0))
        die("out of memory");
}

/* mkdir the scratch directory name, 0700 and root's until the run's user is known. Returns 0 or an errno. */
int make_scratch_dir(const char *name)
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

/* Idle work, done before the next request is read. A failure here costs only speed: the run then makes what is
 * missing itself, and reports the error if it fails again. */
void prepare_next(void)
{
    name_next();
    const char *ignored;
    if (Supervisor.cgroup_mode && !Next.cg_ready)
        make_next_cgroups(&ignored);
    if (Supervisor.scratch_fd >= 0 && !Next.scratch_made)
        Next.scratch_made = make_scratch_dir(Next.name) == 0;
    if (Supervisor.shm && !have_zygote() && (!Supervisor.cgroup_mode || Next.cg_ready)) {
        discard_zygote(); /* the descriptors of one that died */
        spawn_zygote();
    }
    /* Off the next run's path: nothing but the run itself allocates from now on. */
    if (Supervisor.sandbox_meminfo && !Supervisor.cgroup_mode)
        Next.sandbox_base = sandbox_memory();
}
