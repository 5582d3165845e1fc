"""cffi API-mode build of `runtime._syscalls` (run at install time by setup.py, or in place
with `python -m runtime.syscalls_build --inplace` for a source checkout).

API mode, not ABI mode: parsing a cdef at import costs ~27 ms (pycparser) on every launch;
a compiled module imports in well under a millisecond.
"""

from __future__ import annotations

import sys

from cffi import FFI

CDEF = """
int mount(const char *source, const char *target, const char *fstype,
          unsigned long flags, const char *data);
int umount2(const char *target, int flags);
int unshare(int flags);
int setns(int fd, int nstype);
int chroot(const char *path);
int shf_pivot_root(const char *new_root, const char *put_old);
int shf_mount_setattr(int dirfd, const char *path, unsigned int flags,
                      uint64_t attr_set, uint64_t attr_clr, uint64_t propagation);
int shf_clear_caps(void);
int shf_drop_bounding(void);
int shf_prctl(int option, unsigned long arg2);
int shf_open_tree(int dirfd, const char *path, unsigned int flags);
int shf_move_mount(int from_dirfd, const char *from_path, int to_dirfd, const char *to_path,
                   unsigned int flags);
"""

SOURCE = r"""
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <stdint.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/capability.h>

#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif

static int shf_open_tree(int dirfd, const char *path, unsigned int flags)
{
    return syscall(SYS_open_tree, dirfd, path, flags);
}

static int shf_move_mount(int from_dirfd, const char *from_path, int to_dirfd, const char *to_path,
                          unsigned int flags)
{
    return syscall(SYS_move_mount, from_dirfd, from_path, to_dirfd, to_path, flags);
}

static int shf_pivot_root(const char *new_root, const char *put_old)
{
    return syscall(SYS_pivot_root, new_root, put_old);
}

static int shf_mount_setattr(int dirfd, const char *path, unsigned int flags,
                             uint64_t attr_set, uint64_t attr_clr, uint64_t propagation)
{
    struct { uint64_t attr_set, attr_clr, propagation, userns_fd; } attr =
        { attr_set, attr_clr, propagation, 0 };
    return syscall(SYS_mount_setattr, dirfd, path, flags, &attr, sizeof attr);
}

/* permitted, effective and inheritable sets all empty */
static int shf_clear_caps(void)
{
    struct __user_cap_header_struct head = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2] = { { 0, 0, 0 }, { 0, 0, 0 } };
    return syscall(SYS_capset, &head, data);
}

/* empty the bounding set: every capability the kernel knows */
static int shf_drop_bounding(void)
{
    for (int cap = 0; cap < 64; cap++) {
        if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0)
            break;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
            return -1;
    }
    return 0;
}

static int shf_prctl(int option, unsigned long arg2)
{
    return prctl(option, arg2, 0, 0, 0);
}
"""

ffi = FFI()
ffi.cdef(CDEF)
ffi.set_source("runtime._syscalls", SOURCE)

if __name__ == "__main__":
    if "--inplace" in sys.argv:
        import os
        import tempfile
        # build next to the checkout (not in /tmp, often another filesystem), then rename: a
        # rename within one directory never crosses filesystems and replaces atomically
        runtime_dir = os.path.dirname(os.path.abspath(__file__))
        with tempfile.TemporaryDirectory(dir=runtime_dir, prefix=".build-") as tmp:
            built = ffi.compile(tmpdir=tmp)
            target = os.path.join(runtime_dir, os.path.basename(built))
            os.replace(built, target)
            print(target)
    else:
        ffi.compile(verbose=True)
