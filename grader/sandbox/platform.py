"""How the sandbox's zygote is started: inside bubblewrap, or (where it cannot be) not isolated.

bubblewrap (`bwrap`, Debian/Ubuntu's `bubblewrap`, Flatpak's sandbox) gives the zygote an
allow-list view of the machine, built here: the system's libraries, the interpreter and the
folders on its `sys.path` (read-only, with the data folders of the packaged datasets hidden), the
grader's runtime files (and nothing else of the kit), the torch hub cache for pretrained weights,
an empty /tmp, a fresh /proc and a minimal /dev. New user, pid, network, IPC, UTS and cgroup
namespaces; no capability; an environment built from nothing; killed with its parent. The
zygote then gives each probe namespaces of its own (grader.sandbox.zygote): bubblewrap has no way
to fork fresh sandboxes from a warm process, which is what keeps a probe's start cheap.

As root, the sandbox runs as `nobody` rather than as root: the kernel does not count root's
processes against a process limit, and nothing should run as root that need not. `nobody` may not
be able to open the interpreter's folder (a Python under /root), so a small launcher (this
module's `main`, still root) first mounts the folders that bubblewrap will bind into a private,
readable place, then becomes `nobody` and runs bubblewrap.

Where bubblewrap is missing or refused (macOS, Windows, a container without user namespaces), the
zygote runs as a plain child process: limits only, reported as "not isolated".
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grader
from grader.environment import PRELOAD_ENV, sandbox_disabled

BWRAP = "bubblewrap"
NONE = "none"
KIT = "/kit"  # where the grader's runtime files are, inside the sandbox
SANDBOX_HOME = "/tmp"
_RUNTIME = (
    "__init__.py",
    "codec.py",
    "probing.py",
    "d2l.py",
    "sandbox/__init__.py",
    "sandbox/zygote.py",
    "sandbox/child.py",
)
# what the zygote imports before it serves (with an assignment's own preloads): what probes need
PRELOAD = ("torch", "torch._dynamo", "grader.probing", "grader.d2l", "grader.sandbox.child")
_KIT_ROOT = Path(grader.__file__).resolve().parent.parent
_KIT_DISTRIBUTION = "cnn-assignment-kit"
_KIT_FOLDERS = (".git", "assignments", "grader", "reference", "starter", "tests")  # under the kit's root
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/nsswitch.conf")
_MS_BIND, _MS_REC, _MS_PRIVATE, _MS_RDONLY, _MS_REMOUNT = 4096, 16384, 1 << 18, 1, 32
_CLONE_NEWNS = 0x00020000
_STAGES = ("/mnt", "/media", "/srv")  # folders that exist: the staging mounts over them, leaving nothing behind


@dataclass(frozen=True)
class Launch:
    """How to start one zygote: the command, the environment, and what it is."""

    command: list[str]
    env: dict[str, str]
    mechanism: str  # "bubblewrap" or "none"
    view: tuple[str, ...] | None = None  # the folders of the machine it sees (None: all of them)


def runtime_files() -> dict[str, Path]:
    """The grader's files a sandbox sees, by their path under KIT: the runtime, never a test."""
    package = Path(grader.__file__).resolve().parent
    return {f"{KIT}/grader/{name}": package / name for name in _RUNTIME}


def hidden_data_dirs() -> list[Path]:
    """Package folders that hold datasets the grader checks against: empty inside a sandbox."""
    from grader.data import packaged_data_dirs

    return [path for path in packaged_data_dirs() if path.is_dir()]


def python_dirs(preload: tuple[str, ...] = ()) -> list[Path]:
    """What `import torch` needs, read-only: the interpreter's prefixes and site-packages, and the
    folders of sys.path that hold the modules the zygote preloads and the kit's dependencies
    (wherever a .pth file, conda or a module system put them). Never another folder of sys.path
    (a script's folder, the working folder), nor the kit's own folders or the data folder."""
    import site

    prefixes = {Path(p).resolve() for p in (sys.base_prefix, sys.prefix)}
    sites = {Path(p).resolve() for p in (*site.getsitepackages(), site.getusersitepackages()) if os.path.isdir(p)}
    # as sys.path names them (a .pth line's folder, unresolved): the sandbox's interpreter reads the same lines
    packages = {p.absolute() for p in (*_module_dirs((*PRELOAD, *preload)), *_distribution_dirs(_KIT_DISTRIBUTION))}
    found = prefixes | {p for p in sites if "site-packages" in p.parts or "dist-packages" in p.parts}
    found |= {p for p in packages if not _kit_folder(p.resolve())}
    return sorted(p for p in found if not any(q in p.parents for q in found))  # the outermost of nested ones


def _module_dirs(names: tuple[str, ...]) -> set[Path]:
    """The sys.path folders that hold these modules here (a package's parent folder)."""
    import importlib.util

    found = set()
    for name in {name.partition(".")[0] for name in names} - {"grader"}:  # the grader's runtime is at KIT
        spec = importlib.util.find_spec(name)
        location = (spec.submodule_search_locations or [spec.origin])[0] if spec else None
        if location and os.path.isabs(location):
            found.add(Path(location).parent)
    return found


def _distribution_dirs(root: str) -> set[Path]:
    """The folders that hold the distribution `root` and every distribution it requires, as installed
    (extras included where they are): the kit's dependencies, wherever each one lies."""
    from importlib import metadata

    seen, todo, found = set(), [root], set()
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:  # an extra not installed
            continue
        found.add(Path(distribution.locate_file("")))
        todo += [match.group() for r in distribution.requires or () if (match := re.match(r"[A-Za-z0-9._-]+", r))]
    return found


def _kit_folder(folder: Path) -> bool:
    """Whether binding `folder` would show the kit (its root, or what holds it, or its own folders) or
    the datasets: never in a sandbox's view, whatever sys.path says."""
    from grader.data import data_dir

    if folder == _KIT_ROOT or folder in _KIT_ROOT.parents:
        return True
    closed = [_KIT_ROOT / name for name in _KIT_FOLDERS] + [data_dir().resolve()]
    return any(folder == path or path in folder.parents for path in closed)


def view_lacks(name: str, view: tuple[str, ...]) -> Path | None:
    """The folder that holds module `name` here when the sandbox's `view` does not have it, else None."""
    seen = [Path(folder).resolve() for folder in view]
    lacking = (f for f in _module_dirs((name,)) if not any(v == f.resolve() or v in f.resolve().parents for v in seen))
    return next(lacking, None)


def bwrap_args(env: dict[str, str], source_of: dict[str, str], gpu: bool, uid: int, gid: int) -> list[str]:
    """bubblewrap's arguments for the zygote; `source_of` maps a path inside to the path bwrap reads."""
    args = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]
    args += ["--uid", str(uid), "--gid", str(gid), "--hostname", "sandbox"]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", source_of.get(path, path), path]
    for path in _SYSTEM_FILES:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    for inside in source_of:
        if inside not in _SYSTEM_DIRS:
            args += ["--ro-bind", source_of[inside], inside]
    for folder in hidden_data_dirs():
        args += ["--tmpfs", str(folder), "--remount-ro", str(folder)]
    if gpu:
        for device in sorted(Path("/dev").glob("nvidia*")):
            args += ["--dev-bind", str(device), str(device)]
    for key, value in sorted(env.items()):
        args += ["--setenv", key, value]
    return [*args, "--chdir", "/tmp", "--", python_executable(), "-m", "grader.sandbox.zygote"]


def python_executable() -> str:
    """The interpreter, by a path that the sandbox has: its folder resolved (as the prefixes are),
    its name kept (a virtual environment is recognised by the folder its `python` lies in)."""
    return str(Path(sys.executable).parent.resolve() / Path(sys.executable).name)


def sandbox_env(threads: int, preload: tuple[str, ...]) -> dict[str, str]:
    """The zygote's whole environment: nothing of the grader's but what a probe needs."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": SANDBOX_HOME,
        "USER": "sandbox",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONPATH": KIT,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OMP_WAIT_POLICY": "PASSIVE",  # idle threads sleep: on a busy machine, spinning would count as the code's CPU
        PRELOAD_ENV: ",".join((*PRELOAD, *preload)),
    }
    torch_home = _torch_home()
    if torch_home.is_dir():
        env["TORCH_HOME"] = str(torch_home)
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


def _torch_home() -> Path:
    """torch.hub's $TORCH_HOME, worked out as torch does, without importing torch (the zygote starts
    before this process imports it: the two imports overlap)."""
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))))


def mechanism() -> str:
    """ "bubblewrap" where bwrap is installed and runs here (as this user, or as nobody for root), else
    "none" (also when $GRADER_SANDBOX is "none": the kit's tests of that path)."""
    return NONE if sandbox_disabled() else _bubblewrap_works()


@functools.cache
def _bubblewrap_works() -> str:
    if shutil.which("bwrap") is None or sys.platform != "linux":
        return NONE
    uid, gid = _sandbox_user()
    smoke = ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "true"]
    command = [*_launcher(), json.dumps({"args": smoke, "stage": [], "uid": uid, "gid": gid})] if _launcher() else smoke
    try:
        probe = subprocess.run(command, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return NONE
    return BWRAP if probe.returncode == 0 else NONE


def _launcher() -> list[str]:
    """As root, the staging launcher (main, below); else nothing: bwrap runs as this user."""
    return [sys.executable, "-m", "grader.sandbox.platform"] if os.geteuid() == 0 else []


def _sandbox_user() -> tuple[int, int]:
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    try:
        nobody = pwd.getpwnam("nobody")
        return nobody.pw_uid, nobody.pw_gid
    except KeyError:
        return 65534, 65534


def zygote_launch(fd: int, threads: int, preload: tuple[str, ...], gpu: bool) -> Launch:
    """How to start a zygote here, talking to the grader on the inherited socket `fd`."""
    env = sandbox_env(threads, preload)
    if mechanism() == NONE:
        plain = {**env, "PYTHONPATH": str(_KIT_ROOT), "HOME": tempfile.gettempdir(), "TMPDIR": tempfile.gettempdir()}
        return Launch([sys.executable, "-m", "grader.sandbox.zygote", str(fd)], plain, NONE)
    uid, gid = _sandbox_user()
    inside = {str(p): str(p) for p in python_dirs(preload)}
    inside.update({k: str(v) for k, v in runtime_files().items()})
    torch_home = env.get("TORCH_HOME")
    if torch_home:
        inside[torch_home] = torch_home
    args = [*bwrap_args(env, inside, gpu, uid, gid), str(fd)]
    view = (*_SYSTEM_DIRS, *inside)
    if os.geteuid() != 0:
        return Launch(args, {}, BWRAP, view)
    # as root: the launcher stages the bound folders where nobody can read them, then runs bwrap
    stage = sorted({source for source in inside.values() if not _readable_by(source, uid)})
    plan = json.dumps({"args": args, "stage": stage, "uid": uid, "gid": gid})
    return Launch([*_launcher(), plan], {"PYTHONPATH": str(_KIT_ROOT), "PATH": os.defpath}, BWRAP, view)


def _readable_by(path: str, uid: int) -> bool:
    """Whether `uid` can reach and read `path` (as its owner, or as anyone), by the mode bits."""

    def allows(target: Path, bits: int) -> bool:
        st = target.stat()
        return bool((st.st_mode >> 6 if st.st_uid == uid else st.st_mode) & bits == bits)

    through = all(allows(folder, 0o1) for folder in Path(path).parents)
    return through and allows(Path(path), 0o5 if os.path.isdir(path) else 0o4)


# --- the root launcher -----------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, flags: int, fstype: str | None = None, options: str | None = None) -> None:
    args = [None if a is None else a.encode() for a in (source, target, fstype, options)]
    if _libc.mount(args[0], args[1], args[2], flags, args[3]) != 0:
        raise OSError(ctypes.get_errno(), f"cannot mount {target}")


def main() -> None:
    """As root: stage the folders nobody could not open, become the sandbox user, exec bwrap.

    The staging happens in a mount namespace of this process's own: the machine's mounts do not
    change, and the staged copies are gone with the sandbox.
    """
    plan = json.loads(sys.argv[1])
    args = plan["args"]
    if plan["stage"]:
        if _libc.unshare(_CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "cannot make a mount namespace")
        _mount("none", "/", _MS_REC | _MS_PRIVATE)
        free = [d for d in _STAGES if os.path.isdir(d) and not any(p.startswith(d + "/") for p in plan["stage"])]
        stage = free[0] if free else tempfile.mkdtemp(prefix="grader-stage-")
        _mount("tmpfs", stage, 0, "tmpfs", "mode=755,size=1m")  # in this process's own mounts only
        for index, path in enumerate(plan["stage"]):
            target = f"{stage}/{index}"
            os.mkdir(target) if os.path.isdir(path) else Path(target).touch()
            _mount(path, target, _MS_BIND | _MS_REC)
            args = [target if arg == path and args[i - 1] == "--ro-bind" else arg for i, arg in enumerate(args)]
    if "uid" in plan:
        os.setgroups([])
        os.setgid(plan["gid"])
        os.setuid(plan["uid"])
    os.execvp(args[0], args)


if __name__ == "__main__":
    main()
