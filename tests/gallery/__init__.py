"""The gallery of hostile and broken hand-ins (gallery.toml): building them, and what each must get."""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from grader.report import Report
from grader.spec import Spec

GALLERY = tomllib.loads((Path(__file__).parent / "gallery.toml").read_text())
ENTRIES: dict[str, dict[str, Any]] = {entry["name"]: entry for entry in GALLERY["entry"]}
# Small limits keep hostile hand-ins quick. The reference's probes take up to 7 s each on a 2-core
# machine shared with other work (load 12), hence 15 s per test; an endless loop at import costs four
# probes (60 s) and the rest of the tests still run within the 150 s of a hand-in.
LIMITS = {"test_timeout_s": 15, "total_timeout_s": 150, "memory_mb": 1024, "processes": 16, "file_mb": 8}


def build(entry: dict[str, Any], spec: Spec, submissions: Path, out: Path) -> Path:
    """Write one hand-in into `submissions`; @OUT@ and @SUBMISSIONS@ become those folders."""
    base = {"reference": spec.reference_dir, "starter": spec.starter_dir}.get(entry.get("base", "none"))
    files = {f: (base / f).read_text() for f in spec.files} if base else {}
    for file, code in entry.get("prepend", {}).items():
        files[file] = code + files[file]
    for file, code in entry.get("append", {}).items():
        files[file] += code
    files.update(entry.get("files", {}))
    for file in entry.get("omit", []):
        del files[file]
    place = {"@OUT@": str(out), "@SUBMISSIONS@": str(submissions)}
    data = {}
    for file, text in files.items():
        for marker, value in place.items():
            text = text.replace(marker, value)
        data[file] = text.encode("latin-1" if file in entry.get("latin1", []) else "utf-8")
    kind, name = entry.get("kind", "folder"), entry["name"]
    if kind == "bytes":
        (raw_name, raw), *_ = entry["raw"].items()
        path = submissions / raw_name
        path.write_bytes(raw.encode("latin-1"))
    elif kind == "zip":
        path = submissions / f"{name}.zip"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for file, content in data.items():
                archive.writestr(f"{name}/{file}", content)
            for member, text in entry.get("zip_extra", {}).items():
                archive.writestr(member, text)
        path.write_bytes(buffer.getvalue())
    else:
        path = submissions / name
        path.mkdir()
        for file, content in data.items():
            (path / file).write_bytes(content)
    return path


def failing(entry: dict[str, Any]) -> set[str]:
    """The test functions that must fail, with the groups of gallery.toml expanded."""
    names: set[str] = set()
    pending = list(entry["fails"])
    while pending:
        name = pending.pop()
        if name in GALLERY["groups"]:
            pending += GALLERY["groups"][name]
        else:
            names.add(name)
    return names


def problems(entry: dict[str, Any], report: Report, status: str) -> list[str]:
    """Where a graded hand-in differs from what its entry says it must get (empty: as expected)."""
    found = []
    if status != entry.get("status", "graded"):
        found.append(f"status {status}, expected {entry.get('status', 'graded')} ({report.problem})")
    must_fail = failing(entry)
    tests = {t.nodeid.split("::")[-1]: t for t in report.tests}
    found += [f"{name} was not graded" for name in sorted(must_fail - set(tests))]
    for name, test in tests.items():
        if name not in must_fail and test.status != "passed":
            found.append(f"{name} failed: {test.reason}")
        elif name in must_fail and test.status == "passed":
            found.append(f"{name} passed")
        elif name in must_fail and test.limit != "total_timeout" and entry.get("reason", "") not in test.reason:
            found.append(f"{name}: {test.reason!r} does not say {entry['reason']!r}")
    expected = sum(t.max_score for name, t in tests.items() if name not in must_fail)
    if abs(report.score - expected) > 1e-9:
        found.append(f"score {report.score:g}, expected {expected:g}")
    if "limit" in entry and entry["limit"] not in {t.limit for t in report.tests}:
        found.append(f"no test tripped the {entry['limit']} limit: {sorted({t.limit for t in report.tests})}")
    return found
