"""A submission that looks around the machine from inside the sandbox (tests/test_sandbox.py)."""

import os
import socket
from pathlib import Path


def look(kit, home, data):
    def attempt(what):
        try:
            return what()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    def listing(path):
        return sorted(os.listdir(path)) if os.path.exists(path) else "absent"

    status = Path("/proc/self/status").read_text()
    Path("/dev/shm/left-behind").write_text("for the next probe")
    Path("/tmp/left-behind").write_text("for the next probe")
    return {
        "uid": os.getuid(),
        "capabilities": int(status.split("CapEff:")[1].split()[0], 16),
        "kit": listing(os.path.join(kit, "reference")),
        "kit_git": listing(os.path.join(kit, ".git")),
        "home": listing(home),
        "grader_files": listing("/kit/grader"),
        "shadow": "absent" if not os.path.exists("/etc/shadow") else attempt(lambda: open("/etc/shadow").read()),
        "packaged_data": [name for folder in data if os.path.isdir(folder) for name in os.listdir(folder)],
        "processes": sorted(p for p in os.listdir("/proc") if p.isdigit()),
        "network": attempt(lambda: str(socket.create_connection(("1.1.1.1", 80), timeout=2))),
        "loopback": attempt(lambda: str(socket.create_connection(("127.0.0.1", 22), timeout=2))),
        "tmp": sorted(n for n in os.listdir("/tmp") if n != "left-behind"),
        "shm": sorted(n for n in os.listdir("/dev/shm") if n != "left-behind"),
        "environment": sorted(os.environ),
        "user_namespace": attempt(lambda: os.unshare(0x10000000) if hasattr(os, "unshare") else _unshare()),
    }


def _unshare():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) != 0:
        raise OSError(ctypes.get_errno(), "unshare refused")
    return "a user namespace of its own"
