/* Emptying the sandbox's IPC namespace after a run (--wipe-ipc): every System V shared memory segment, semaphore set
 * and message queue the run left is removed before the next run starts, so that no run sees another's (nor keeps
 * memory pinned for the runs after it). POSIX message queues and named semaphores are files, in /dev/mqueue and
 * /dev/shm: those are --wipe directories.
 *
 * Only for a supervisor in an IPC namespace of its own (Docker gives every container one): every object in it is
 * then a run's. The supervisor itself makes none but the probes below, removed at once.
 *
 * Removing an object (IPC_RMID) takes the uid of its creator or owner, or CAP_SYS_ADMIN, which the supervisor has
 * not: it removes each object with its effective uid set to the creator's for that call. Its real and saved uids
 * stay 0, so setting the effective uid back to 0 gives it back its capabilities. (No process of the run is alive
 * then, so nothing can signal or trace it meanwhile.)
 *
 * Finding the objects, one of two ways, chosen at start-up with a probe (with neither, the supervisor refuses to
 * start):
 *   by index (Linux 4.17 and later): *_INFO gives how many objects there are and the highest index in use, and
 *     *_STAT_ANY the object at an index with its creator, whatever its mode;
 *   by sequence (gVisor, which has neither): an object's id is the first unused one after the last id given out.
 *     After each run the supervisor makes (and removes) a private object of each kind, whose id bounds the ids the
 *     run can have had, from just past the previous probe's; it removes every id in between as the run's uid, the
 *     creator of them all (IPC_STAT, which would name the creator, needs a read permission the run may have taken
 *     away). A run that went through more than MAX_SEQUENCE_IDS ids of a kind fails the clean-up (see Dirty). */
#include "supervisor.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

/* Older libc headers lack these (Linux 4.17); the numbers are the kernel's ABI. */
#ifndef SHM_STAT_ANY
#define SHM_STAT_ANY 15
#endif
#ifndef SEM_STAT_ANY
#define SEM_STAT_ANY 20
#endif
#ifndef MSG_STAT_ANY
#define MSG_STAT_ANY 13
#endif

/* Far more than any honest run makes, and few enough to look through in a second or so. */
#define MAX_SEQUENCE_IDS 65536

enum { IPC_SHM, IPC_SEM, IPC_MSG, IPC_KINDS };
static const char *const kind_names[IPC_KINDS] = {"shared memory segment", "semaphore set", "message queue"};

/* semctl's fourth argument, which the caller must declare (semctl(2)). */
union semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
    struct seminfo *info;
};

static struct {
    bool by_index;
    int last_probe[IPC_KINDS]; /* by sequence: the id of the latest probe of each kind */
} Ipc;

/* A private object of `kind`, root's: its id, or -1. */
static int make_probe(int kind)
{
    switch (kind) {
    case IPC_SHM: return shmget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    case IPC_SEM: return semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    default: return msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    }
}

static int remove_id(int kind, int id)
{
    switch (kind) {
    case IPC_SHM: return shmctl(id, IPC_RMID, NULL);
    case IPC_SEM: return semctl(id, 0, IPC_RMID);
    default: return msgctl(id, IPC_RMID, NULL);
    }
}

/* Remove object `id` as `uid`. Returns 0, or an errno (EINVAL and EIDRM: there is no such object). */
static int remove_as(int kind, int id, uid_t uid)
{
    if (uid != 0 && setresuid((uid_t)-1, uid, (uid_t)-1) < 0)
        return errno;
    int e = remove_id(kind, id) < 0 ? errno : 0;
    if (uid != 0 && setresuid((uid_t)-1, 0, (uid_t)-1) < 0)
        die("set the effective uid back to 0 after removing a %s: %s", kind_names[kind], strerror(errno));
    return e;
}

/* By index: the highest index in use (the call's result), and how many objects there are; -1 on failure. */
static int index_info(int kind, int *count)
{
    int top;
    if (kind == IPC_SHM) {
        struct shm_info info = {0};
        top = shmctl(0, SHM_INFO, (struct shmid_ds *)(void *)&info);
        *count = info.used_ids;
    } else if (kind == IPC_SEM) {
        struct seminfo info = {0};
        top = semctl(0, 0, SEM_INFO, (union semun){.info = &info});
        *count = info.semusz;
    } else {
        struct msginfo info = {0};
        top = msgctl(0, MSG_INFO, (struct msqid_ds *)(void *)&info);
        *count = info.msgpool;
    }
    return top;
}

/* By index: the id of the object at `index` and its creator; -1 if there is none. */
static int stat_index(int kind, int index, uid_t *creator)
{
    int id;
    if (kind == IPC_SHM) {
        struct shmid_ds ds = {0};
        id = shmctl(index, SHM_STAT_ANY, &ds);
        *creator = ds.shm_perm.cuid;
    } else if (kind == IPC_SEM) {
        struct semid_ds ds = {0};
        id = semctl(index, 0, SEM_STAT_ANY, (union semun){.buf = &ds});
        *creator = ds.sem_perm.cuid;
    } else {
        struct msqid_ds ds = {0};
        id = msgctl(index, MSG_STAT_ANY, &ds);
        *creator = ds.msg_perm.cuid;
    }
    return id;
}

static int wipe_by_index(int kind, char *err, size_t errlen)
{
    int count = 0;
    int top = index_info(kind, &count);
    if (top < 0) {
        snprintf(err, errlen, "count the %ss: %s", kind_names[kind], strerror(errno));
        return -1;
    }
    for (int index = 0; count > 0 && index <= top; index++) {
        uid_t creator = 0;
        int id = stat_index(kind, index, &creator);
        if (id < 0)
            continue; /* nothing at this index */
        int e = remove_as(kind, id, creator);
        if (e && e != EINVAL && e != EIDRM) {
            snprintf(err, errlen, "remove %s %d of uid %u: %s", kind_names[kind], id, (unsigned)creator, strerror(e));
            return -1;
        }
    }
    if (count > 0 && (index_info(kind, &count) < 0 || count > 0)) {
        snprintf(err, errlen, "%d %s(s) left after removing them all", count, kind_names[kind]);
        return -1;
    }
    return 0;
}

static int wipe_by_sequence(int kind, uid_t uid, char *err, size_t errlen)
{
    int probe = make_probe(kind);
    if (probe < 0) {
        snprintf(err, errlen, "make a %s to find the run's: %s", kind_names[kind], strerror(errno));
        return -1;
    }
    remove_as(kind, probe, 0);
    int from = Ipc.last_probe[kind];
    if (probe <= from || probe - from > MAX_SEQUENCE_IDS) {
        snprintf(err, errlen, "the run went through %s ids %d to %d, more than %d", kind_names[kind], from, probe,
                 MAX_SEQUENCE_IDS);
        return -1;
    }
    for (int id = from + 1; id < probe; id++) {
        int e = remove_as(kind, id, uid);
        if (e && e != EINVAL && e != EIDRM) {
            snprintf(err, errlen, "remove %s %d: %s", kind_names[kind], id, strerror(e));
            return -1;
        }
    }
    Ipc.last_probe[kind] = probe;
    return 0;
}

/* Whether listing by index finds object `id` of `kind`. */
static bool listed_by_index(int kind, int id)
{
    int count = 0;
    int top = index_info(kind, &count);
    for (int index = 0; top >= 0 && index <= top; index++) {
        uid_t creator;
        if (stat_index(kind, index, &creator) == id)
            return true;
    }
    return false;
}

void setup_ipc(void)
{
    int first = make_probe(IPC_SHM);
    if (first < 0)
        die("--wipe-ipc: make a System V shared memory segment: %s", strerror(errno));
    Ipc.by_index = listed_by_index(IPC_SHM, first);
    remove_as(IPC_SHM, first, 0);
    if (Ipc.by_index)
        return;
    for (int kind = 0; kind < IPC_KINDS; kind++) {
        Ipc.last_probe[kind] = make_probe(kind);
        if (Ipc.last_probe[kind] < 0)
            die("--wipe-ipc: make a %s: %s", kind_names[kind], strerror(errno));
        remove_as(kind, Ipc.last_probe[kind], 0);
    }
    if (Ipc.last_probe[IPC_SHM] != first + 1)
        die("--wipe-ipc: this kernel neither lists its System V IPC objects (SHM_STAT_ANY) nor numbers them in "
            "sequence (ids %d then %d)", first, Ipc.last_probe[IPC_SHM]);
}

int wipe_ipc(uid_t uid, char *err, size_t errlen)
{
    for (int kind = 0; kind < IPC_KINDS; kind++)
        if ((Ipc.by_index ? wipe_by_index(kind, err, errlen) : wipe_by_sequence(kind, uid, err, errlen)) < 0)
            return -1;
    return 0;
}
