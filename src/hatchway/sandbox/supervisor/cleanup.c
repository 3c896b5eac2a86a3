/* Clean-up after a run's answer: removing its scratch directory and emptying the --wipe directories, never
 * following a symbolic link, and the IPC namespace (ipc.c), and trying again before the next run what failed. */
#include "supervisor.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
int remove_tree_at(int dirfd, const char *name, char *err, size_t errlen)
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

struct dirty Dirty;

void clean_up(const char *scratch, bool wipe, uid_t uid)
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
            Dirty.uid = uid;
            if (!Dirty.error[0])
                snprintf(Dirty.error, sizeof Dirty.error, "wipe %.80s: %.300s", Supervisor.wipe_path[i], err);
        }
    if (wipe && Supervisor.wipe_ipc && wipe_ipc(uid, err, sizeof err) < 0) {
        Dirty.wipe = true;
        Dirty.uid = uid;
        if (!Dirty.error[0])
            snprintf(Dirty.error, sizeof Dirty.error, "empty the IPC namespace: %.300s", err);
    }
}

/* Try again what failed after the previous answer. Returns false, with the error still in Dirty, if it fails
 * again: leftovers of another run may then be in reach, and the run must not start. */
bool clean_up_again(char *first_error, size_t size)
{
    snprintf(first_error, size, "%s", Dirty.error);
    char scratch[sizeof Dirty.scratch];
    snprintf(scratch, sizeof scratch, "%s", Dirty.scratch);
    bool wipe = Dirty.wipe;
    uid_t uid = Dirty.uid;
    memset(&Dirty, 0, sizeof Dirty);
    clean_up(scratch[0] ? scratch : NULL, wipe, uid);
    return !Dirty.error[0];
}
