"""The bwrap sandbox's seccomp filter: the system calls docker's default profile denies.

Docker's default profile allows a list of about 350 system calls and denies the rest. The
ones it denies that a process can reach are the kernel's administrative and debugging
interfaces; this filter denies the same ones (``EPERM``), and allows everything else:

- keys and BPF: ``keyctl``, ``add_key``, ``request_key``, ``bpf``;
- tracing and other processes' memory: ``ptrace``, ``process_vm_readv/writev``, ``kcmp``,
  ``perf_event_open``, ``userfaultfd``;
- namespaces and mounts: ``unshare``, ``setns``, ``mount``, ``umount2``, ``pivot_root``,
  ``chroot``, the new mount API (``fsopen``, ``fsmount``, ``move_mount``, ``open_tree``...),
  and ``clone`` with any ``CLONE_NEW*`` flag; ``clone3`` answers ``ENOSYS`` (as in docker:
  its flags sit in memory a filter cannot read, and the C library then falls back to
  ``clone``, whose flags it can);
- the machine: modules, ``kexec_*``, ``reboot``, ``swapon/off``, clocks, ``acct``,
  ``quotactl``, ``syslog``, ``iopl/ioperm``, ``open_by_handle_at``, ``io_uring_*``, ...

The filter is compiled by libseccomp (Debian ``libseccomp2``, called through ctypes: no
Python package needed) into a BPF program, which bwrap installs (``--seccomp FD``) in the
sandbox's first process before it runs anything of the submission's. Calls of a foreign
architecture (32-bit ``int 0x80``) kill the process (libseccomp's default).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from functools import cache

DENIED = (
    "acct",
    "add_key",
    "bpf",
    "chroot",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "fanotify_init",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "sysfs",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
)
# clone flags that make a namespace (CLONE_NEWNS ... CLONE_NEWNET)
CLONE_NEW = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)

_ALLOW = 0x7FFF0000
_CMP_MASKED_EQ = 7


def _errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class SeccompUnavailable(Exception):
    """libseccomp is not installed, or could not compile the filter."""


@cache
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        raise SeccompUnavailable(
            "libseccomp is not installed (Debian/Ubuntu: apt-get install libseccomp2)"
        ) from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


@cache
def program() -> bytes:
    """The compiled filter (classic BPF, the host's architecture), as bwrap reads it."""
    lib = _lib()
    ctx = lib.seccomp_init(_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        for name in DENIED:
            _rule(lib, ctx, name, _errno(errno.EPERM))
        _rule(lib, ctx, "clone3", _errno(errno.ENOSYS))
        for flag in CLONE_NEW:
            _rule(lib, ctx, "clone", _errno(errno.EPERM), _ArgCmp(0, _CMP_MASKED_EQ, flag, flag))
        read, write = os.pipe()
        try:
            if lib.seccomp_export_bpf(ctx, write) != 0:
                raise SeccompUnavailable("seccomp_export_bpf failed")
            os.close(write)
            write = -1
            chunks = []
            while chunk := os.read(read, 65536):
                chunks.append(chunk)
        finally:
            os.close(read)
            if write >= 0:
                os.close(write)
    finally:
        lib.seccomp_release(ctx)
    return b"".join(chunks)


def _rule(lib: ctypes.CDLL, ctx: int, name: str, action: int, *args: _ArgCmp) -> None:
    number = lib.seccomp_syscall_resolve_name(name.encode())
    if number < 0:  # not a system call of this architecture (or of this libseccomp)
        return
    array = (_ArgCmp * max(1, len(args)))(*args)
    if lib.seccomp_rule_add_array(ctx, action, number, len(args), array) != 0:
        raise SeccompUnavailable(f"libseccomp refused the rule for {name}")


def program_fd() -> int:
    """A file descriptor holding the filter, at offset 0, for ``bwrap --seccomp FD``
    (inheritable; the caller closes it once bwrap has started)."""
    fd = os.memfd_create("harness-seccomp", 0)
    os.write(fd, program())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
