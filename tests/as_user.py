"""Run a command as another user, from root, for the kit's tests of grading as a normal user.

    python -m tests.as_user UID GID COMMAND...

The user may not be able to open the interpreter (a Python under /root, mode 700): in a mount
namespace of this process's own, the interpreter's folder is put back where it was under an empty,
readable /root. The machine's mounts do not change.
"""

from __future__ import annotations

import ctypes
import os
import sys

_libc = ctypes.CDLL(None, use_errno=True)
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18


def _mount(source: str | None, target: str, flags: int, fstype: str | None = None, options: str | None = None) -> None:
    args = [None if a is None else a.encode() for a in (source, target, fstype, options)]
    if _libc.mount(args[0], args[1], args[2], flags, args[3]) != 0:
        raise OSError(ctypes.get_errno(), f"cannot mount {target}")


def main() -> None:
    uid, gid, *command = sys.argv[1:]
    if _libc.unshare(0x00020000) != 0:  # CLONE_NEWNS
        raise OSError(ctypes.get_errno(), "unshare")
    _mount(None, "/", _MS_REC | _MS_PRIVATE)
    prefix = os.path.realpath(sys.base_prefix)
    if prefix.startswith("/root/"):
        keep = os.open(prefix, os.O_PATH)  # held open across the mount that hides it
        _mount("tmpfs", "/root", 0, "tmpfs", "mode=755")
        os.makedirs(prefix)
        _mount(f"/proc/self/fd/{keep}", prefix, _MS_BIND | _MS_REC)
        os.close(keep)
    os.setgroups([])
    os.setgid(int(gid))
    os.setuid(int(uid))
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
