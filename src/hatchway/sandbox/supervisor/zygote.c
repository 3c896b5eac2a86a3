/* The zygote: the next run's process, made while the supervisor waits for the request. */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* The supervisor's order to its zygote. The request's fields are in Supervisor.shm; the run's stdin, stdout and
 * stderr, opened by the supervisor, come along as SCM_RIGHTS. */
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

/* A zygote for the next run. On any failure there is simply none: the run forks its child as it comes. */
void spawn_zygote(void)
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
void discard_zygote(void)
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

/* Hand the request to the zygote, which becomes the run's main process. False if there is none, or it cannot take
 * the order (it died); the run then forks a child instead. */
bool order_zygote(struct run *r, const char *fields, const char *end)
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

/* reap() saw `pid` end: if it was the zygote, it died before its run, which then forks a child instead. */
void zygote_reaped(pid_t pid)
{
    if (pid == Zygote.pid)
        Zygote.pid = 0;
}

bool have_zygote(void) { return Zygote.pid != 0; }
