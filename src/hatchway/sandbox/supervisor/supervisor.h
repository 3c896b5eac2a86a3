/*
 * hatchway-supervisor: runs test programs one at a time inside a grading container, each under its own limits,
 * and reports what that run alone used.
 *
 *   hatchway-supervisor [--cgroup DIR] [--scratch DIR] [--wipe DIR]... [--wipe-ipc] [--sandbox-meminfo]
 *
 * (A --wipe directory that does not exist is skipped: not every sandbox has /dev/mqueue. --wipe-ipc empties the IPC
 * namespace after every run, and is only for a supervisor with an IPC namespace of its own: see ipc.c.
 * --sandbox-meminfo says that /proc/meminfo describes this sandbox alone, as gVisor's does: see proc mode.)
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
 *     sampling the resident size of the run's processes in /proc; processes by RLIMIT_NPROC. Memory no process
 *     maps (System V segments attached by none, files in a tmpfs) is in no resident size: with --sandbox-meminfo,
 *     the run's memory is also the sandbox's growth in anonymous and shared memory since just before the run
 *     (/proc/meminfo's AnonPages + Shmem), whichever is larger, sampled too and once more when the run is over.
 *
 * The program runs as an unprivileged uid/gid with no supplementary groups, no capabilities and no_new_privs, so
 * it can neither signal nor ptrace this process, and it inherits no descriptor but 0, 1 and 2 (files opened here),
 * so it cannot write to the result channel.
 *
 * Why a run cannot reach the host's cgroupfs. In cgroup mode DIR/{memory,pids,cpuacct} are the sandbox's own
 * cgroups on the host, bind-mounted read-write, because this process makes and removes a run's cgroups in them
 * and moves the run's process in (as root, before it drops privileges). Everything in them is root's: the
 * directories (the host makes the sandbox's 0700), the cgroups made here (0755) and the kernel's control files
 * (0644 or less; cgroup.event_control is 0222 on some kernels, which is why the directories above it are 0700). The
 * run's uid is never 0 and it holds no capability (no CAP_DAC_OVERRIDE, CAP_FOWNER or CAP_SYS_ADMIN) and cannot
 * gain one (no_new_privs, and every set empty, checked before exec), so it can neither enter those directories
 * nor open anything below them, nor mount, nor reach them through this process's /proc/1/{root,cwd,fd}, which
 * need ptrace rights over it. The cgroupfs Docker shows at /sys/fs/cgroup, /sys and /proc/sys are read-only mounts.
 * This breaks if a run were given uid 0 or a capability, if the host made those directories (or a run's cgroup)
 * another uid's or group-writable (cgroup delegation), if the mounts held a descriptor a run inherits, or if a
 * run could make this process open a path it names with root's rights (it cannot: no path in a request comes
 * from the run). tests/hostile/test_hostile_cgroupfs.py walks every file a run can see and tries each.
 *
 * A run's clock starts just before exec (the child reports the moment through its close-on-exec pipe) and stops
 * when the main process is reaped. When it ends, every process it left is killed and reaped before the answer:
 * through the cgroup's process list in cgroup mode; with kill(-1) as PID 1 in proc mode; and, on a host (unit
 * tests), through the process group and the supervisor's descendants in /proc, never kill(-1). The counters in
 * the answer (exit status, CPU, peak memory, oom_killed) are read only then.
 *
 * Work between runs. After writing an answer (and a short pause that lets the answer through docker's relay
 * first), and before reading the next request, the supervisor:
 *   - removes the run's scratch directory, empties the --wipe directories (and with --wipe-ipc the IPC namespace)
 *     and removes the run's cgroups;
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
 *
 * The files, one concern each, in layers from the top: a file calls functions of the files listed below it only,
 * never of one above it, so no two files call each other, not even through others
 * (tests/unit/test_supervisor_build.py checks it):
 *   main.c      start-up (options, signals, the cgroup check) and the request loop
 *   run.c       one run from request to answer: its files, scratch directory, process, limits and measurements
 *   next_run.c  idle work between runs: the next run's name, cgroups, scratch directory and zygote
 *   reap.c      reaping, killing every process of a run, and accounting (CPU, memory) in both modes
 *   zygote.c    the next run's process, made ahead, and the order that hands it a request
 *   exec.c      the run's process between fork and exec: session, cgroups, rlimits, user, capabilities, exec
 *   cgroups.c   the --cgroup directories, each run's cgroups and limits, and their counters
 *   cleanup.c   removing a run's files without following links, and trying again what failed
 *   ipc.c       emptying the IPC namespace: the System V objects a run left
 *   util.c      the clock, errno names, a run's error message, small files read and written whole
 *   protocol.c  reading requests, parsing a run request (and giving it TMPDIR), writing the JSON answers (built in
 *               a growable buffer), and die, which answers a fatal error the same way
 * State that more than one file needs is one of three structs declared here: Supervisor (fixed at start-up, with
 * a few counters), Next (made ahead for the next run) and Dirty (clean-up left to try again); the rest is
 * static in the one file that uses it.
 */
#ifndef HATCHWAY_SUPERVISOR_H
#define HATCHWAY_SUPERVISOR_H

#define _GNU_SOURCE
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

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
/* gVisor answers a read of /proc/meminfo in over a millisecond: the sandbox's growth is sampled less often (and read
 * once more at the end, which catches what a run left behind). */
#define MEMINFO_SAMPLE_NS (20 * NS_PER_MS)
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

/* The counters read after every run: opened with the run's cgroups, ahead of it, and read from offset 0. */
enum { CT_CPU, CT_PEAK, CT_OOM, CT_COUNT };

/* ---------------------------------------------------------------- shared state */

/* Everything fixed at start-up, and the few counters that carry from one run to the next (main.c). */
struct supervisor {
    bool cgroup_mode;
    int cg_root[CG_COUNT]; /* O_PATH descriptors of DIR/memory, DIR/pids, DIR/cpuacct */
    bool has_memsw;
    bool reenable_oom_killer; /* the parent memory cgroup disables the OOM killer and children inherit that */
    const char *scratch_dir;
    int scratch_fd;
    size_t nwipe;
    const char **wipe_path;
    int *wipe_fd;
    bool wipe_ipc;
    bool sandbox_meminfo;
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
};
extern struct supervisor Supervisor;

/* What the next run needs that does not depend on its request, made after the previous answer while hatchway
 * reads it: its cgroups, with the previous request's limits already written (a test suite's runs share theirs),
 * its scratch directory, and a zygote (next_run.c). */
struct next_run {
    char name[32]; /* run-<n>; "" until prepare_next names it */
    char *scratch_path, *tmpdir_env;
    bool cg_ready;
    int cg[CG_COUNT];
    int counter[CT_COUNT];
    uint64_t mem_bytes, procs; /* the limits written in cg, 0 for none */
    bool scratch_made;
    uint64_t sandbox_base; /* with --sandbox-meminfo: sandbox_memory() once all this was made */
};
extern struct next_run Next;

/* Clean-up that follows a run's answer: what failed is kept here, tried again before the next run and reported in
 * its answer (cleanup.c). */
struct dirty {
    char error[400];  /* the first failure, "" if none */
    char scratch[32]; /* a scratch directory left to remove, "" if none */
    bool wipe;        /* the --wipe directories (and the IPC namespace) are left to empty */
    uid_t uid;        /* the uid of the run they are left from */
};
extern struct dirty Dirty;

/* ---------------------------------------------------------------- requests and runs */

enum read_result { REQ_OK, REQ_TOO_LARGE, REQ_EOF };

struct request {
    const char *id;
    uint64_t cpu_ms, wall_ms, mem_bytes, procs, fsize_bytes, stack_bytes; /* 0: no limit (the stack: as inherited) */
    uid_t uid;
    gid_t gid;
    const char *stdin_path, *stdout_path, *stderr_path, *cwd;
    bool scratch;
    char **env; /* NULL-terminated, with one spare slot for TMPDIR */
    size_t nenv;
    char **argv; /* NULL-terminated */
    size_t nargv;
};

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
    uint64_t sandbox_base; /* with --sandbox-meminfo: sandbox_memory() before the run started */
    enum failure failure;
    struct child_report failed; /* the child's failure record, stage 0 if none */
    int exit_code_override;     /* for exec failures: 127 or 126 like a shell */
    char error[900];
};

/* The functions each file offers the others, lowest layer first (the file map above). */

/* ---------------------------------------------------------------- protocol.c */

/* A growable byte buffer; results are built in one and written with a single write(2). */
struct sbuf {
    char *p;
    size_t len, cap;
};
void sb_add(struct sbuf *b, const char *s, size_t n);
void sb_puts(struct sbuf *b, const char *s);
void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void emit(struct sbuf *b);
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void emit_error(const char *msg);
void emit_run_result(const struct run *r, const char *id, uint64_t cpu_us, uint64_t wall_us, uint64_t mem);
enum read_result read_request(char **begin, char **end);
void let_the_answer_go(void);
void free_request(struct request *rq);
const char *parse_run(char *begin, char *end, struct request *rq, char *msg, size_t msglen);
void set_tmpdir(struct request *rq, char *tmpdir_env);

/* ---------------------------------------------------------------- util.c */

uint64_t now_ns(void);
static inline uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }
static inline uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }
void describe_errno(char *out, size_t size, int e);
void set_error(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void set_errno_error(struct run *r, const char *what, int e);

ssize_t read_open_file(int fd, char *buf, size_t size);
ssize_t read_file_at(int dirfd, const char *name, char *buf, size_t size);
bool parse_u64_text(const char *buf, uint64_t *out);
bool read_u64_at(int dirfd, const char *name, uint64_t *out);
int write_file_at(int dirfd, const char *name, const char *value);
bool find_key_u64(const char *text, const char *key, uint64_t *out);
int open_dir(const char *path, const char *what);

/* ---------------------------------------------------------------- ipc.c */

void setup_ipc(void);
int wipe_ipc(uid_t uid, char *err, size_t errlen);

/* ---------------------------------------------------------------- cleanup.c */

int remove_tree_at(int dirfd, const char *name, char *err, size_t errlen);
void clean_up(const char *scratch, bool wipe, uid_t uid);
bool clean_up_again(char *first_error, size_t size);

/* ---------------------------------------------------------------- cgroups.c */

void setup_cgroups(const char *dir);
void close_counters(int counter[CT_COUNT]);
ssize_t read_counter(const int cg[CG_COUNT], const int counter[CT_COUNT], int which, char *buf, size_t size);
bool read_counter_u64(const int cg[CG_COUNT], const int counter[CT_COUNT], int which, uint64_t *out);
void remove_cgroup_dirs(const char *name, int cg[CG_COUNT]);
int make_next_cgroups(const char **failed);
int make_cgroups(struct run *r, const struct request *rq, bool made_ahead, uint64_t mem_bytes, uint64_t procs);
size_t signal_cgroup(const struct run *r, int sig);

/* ---------------------------------------------------------------- exec.c */

const char *stage_name(int stage);
void child_fail(int fd, int stage, int err) __attribute__((noreturn));
void child_enter(const struct run *r);
void child_exec(const struct request *rq, const struct run *r) __attribute__((noreturn));

/* ---------------------------------------------------------------- zygote.c */

void spawn_zygote(void);
void discard_zygote(void);
bool order_zygote(struct run *r, const char *fields, const char *end);
void zygote_reaped(pid_t pid);
bool have_zygote(void);

/* ---------------------------------------------------------------- reap.c */

void wait_sigchld(uint64_t timeout_ns);
void reap(struct run *r);
void scan_procs(void);
bool kill_run(struct run *r);
void terminate_run(const struct run *r);
uint64_t cpu_so_far(const struct run *r, bool scanned);
uint64_t rss_so_far(void);
uint64_t sandbox_memory(void);
uint64_t sandbox_growth(const struct run *r);
void end_leftovers(struct run *r);
void measure(struct run *r, uint64_t *cpu_us, uint64_t *memory_bytes);

/* ---------------------------------------------------------------- next_run.c */

void name_next(void);
int make_scratch_dir(const char *name);
void prepare_next(void);

/* ---------------------------------------------------------------- run.c */

void handle_run(struct request *rq, const char *fields, const char *end);

#endif
