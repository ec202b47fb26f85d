"""File flag constants (x86_64 values, as `F_GETFL` reports them) and their names.

The values are the kernel's own so that the model's `f_flags` can be compared bit for bit
with what `fcntl(F_GETFL)` returns on the live kernel.
"""

from __future__ import annotations

O_RDONLY = 0o0
O_WRONLY = 0o1
O_RDWR = 0o2
O_ACCMODE = 0o3
O_APPEND = 0o2000
O_NONBLOCK = 0o4000
O_ASYNC = 0o20000  # FASYNC
O_DIRECT = 0o40000
O_LARGEFILE = 0o100000
O_NOATIME = 0o1000000
O_CLOEXEC = 0o2000000

# fs/fcntl.c: the bits F_SETFL may change directly (O_NDELAY == O_NONBLOCK on x86).
SETFL_MASK = O_APPEND | O_NONBLOCK | O_DIRECT | O_NOATIME
# Linux-CR restart: restore_file_common() passes `f_flags & CKPT_SETFL_MASK` to vfs_fcntl().
CKPT_SETFL_MASK = O_APPEND | O_NONBLOCK | O_ASYNC | O_DIRECT | O_NOATIME

# f_mode bits (include/linux/fs.h)
FMODE_READ = 0x1
FMODE_WRITE = 0x2
FMODE_LSEEK = 0x4

FLAG_NAMES: dict[str, int] = {
    "O_APPEND": O_APPEND,
    "O_NONBLOCK": O_NONBLOCK,
    "O_ASYNC": O_ASYNC,
    "O_DIRECT": O_DIRECT,
    "O_NOATIME": O_NOATIME,
    "O_LARGEFILE": O_LARGEFILE,
}
ACC_NAMES: dict[str, int] = {"O_RDONLY": O_RDONLY, "O_WRONLY": O_WRONLY, "O_RDWR": O_RDWR}
FMODE_NAMES: dict[str, int] = {"READ": FMODE_READ, "WRITE": FMODE_WRITE, "LSEEK": FMODE_LSEEK}


def acc_fmode(acc: int) -> int:
    """The FMODE_READ/WRITE bits an open with access mode `acc` gives."""
    return {O_RDONLY: FMODE_READ, O_WRONLY: FMODE_WRITE, O_RDWR: FMODE_READ | FMODE_WRITE}[acc]


def flags_str(flags: int) -> str:
    """`O_RDWR|O_APPEND|...` for an f_flags value, unknown bits in octal."""
    acc = flags & O_ACCMODE
    # Access mode 3 is no O_* name (open() treats it as "ioctl only"); a counterexample to
    # induction starts from an arbitrary, possibly unreachable, state and may carry it.
    parts = [next((n for n, v in ACC_NAMES.items() if v == acc), "O_ACCMODE")]
    rest = flags & ~O_ACCMODE
    for name, bit in FLAG_NAMES.items():
        if rest & bit:
            parts.append(name)
            rest &= ~bit
    if rest:
        parts.append(oct(rest))
    return "|".join(parts)


def fmode_str(mode: int) -> str:
    return "|".join(n for n, v in FMODE_NAMES.items() if mode & v) or "0"
