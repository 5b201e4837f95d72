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
# Small limits keep hostile hand-ins quick: 15 s of CPU per test (the reference's probes use about
# 1 s), found once for a module that cannot load; the whole run's wall clock is only a backstop.
LIMITS = {"test_timeout_s": 15, "total_timeout_s": 600, "memory_mb": 1024, "processes": 16, "file_mb": 8}


def build(entry: dict[str, Any], spec: Spec, submissions: Path, out: Path, port: int = 9) -> Path:
    """Write one hand-in into `submissions`; @OUT@, @SUBMISSIONS@, @KIT@ and @PORT@ become those."""
    base = {"reference": spec.reference_dir, "starter": spec.starter_dir}.get(entry.get("base", "none"))
    files = {f: (base / f).read_text() for f in spec.files} if base else {}
    for file, code in entry.get("prepend", {}).items():
        files[file] = code + files[file]
    for file, code in entry.get("append", {}).items():
        files[file] += code
    files.update(entry.get("files", {}))
    for file in entry.get("omit", []):
        del files[file]
    place = {"@OUT@": str(out), "@SUBMISSIONS@": str(submissions), "@KIT@": str(spec.root), "@PORT@": str(port)}
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
        elif name in must_fail and not test.hidden and entry.get("reason", "") not in (report.problem or test.reason):
            # (a hidden test's reason is generic: it carries no word of the student's code; a hand-in
            # that could not be read says why once, in the report's problem)
            found.append(f"{name}: {test.reason!r} does not say {entry['reason']!r}")
    expected = sum(t.max_score for name, t in tests.items() if name not in must_fail)
    if abs(report.score - expected) > 1e-9:
        found.append(f"score {report.score:g}, expected {expected:g}")
    if "limit" in entry and entry["limit"] not in {t.limit for t in report.tests}:
        found.append(f"no test tripped the {entry['limit']} limit: {sorted({t.limit for t in report.tests})}")
    return found
