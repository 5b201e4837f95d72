"""Late hand-ins: when each was handed in, and what the late policy takes off for it.

The times come from the download where it states them (Gradescope's `created_at`, grader.batch.layouts),
else from `submissions.csv` beside the submissions (columns `id,time`, ISO-8601), else from the
files themselves (the newest modification time in an entry). A time without a zone is
the machine's local time. Each day or part of a day after the deadline is a day late.

The penalty is not part of a grading: `grade batch` sets each report's `late` at every run, from
the --deadline it is given, so that changing the deadline re-renders the reports without grading
anything again (the resume key does not hold it). The gradebook keeps the deadline it last applied
(DIR/.batch/deadline.json): a run given none applies it again and says so, and `--no-deadline`
drops it, so that no penalty disappears because a rerun forgot the option.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from grader.batch.store import TIMES_FILE, Entry, write_whole
from grader.errors import UserError
from grader.spec import LatePolicy

DAY_S = 86400
DEADLINE_FILE = "deadline.json"  # in DIR/.batch: the deadline the last run applied


def parse_time(text: str, where: str) -> datetime:
    """An ISO-8601 time ("2025-03-14T23:59", "2025-03-14 23:59:00+07:00", "...Z"), in its own zone or the machine's."""
    text = text.strip()
    try:  # Python 3.10 reads no "Z"
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
    except ValueError:
        raise UserError(f"{where}: {text!r} is not an ISO-8601 time, e.g. 2025-03-14T23:59+07:00") from None
    return moment if moment.tzinfo else moment.astimezone()  # a time without a zone is the machine's


@dataclass(frozen=True)
class Deadline:
    """`--deadline` and the late policy that goes with it."""

    due: datetime
    policy: LatePolicy

    def late(self, handed_in: datetime) -> dict[str, Any]:
        """A report's `late`: when it was handed in, how many started days late, the fraction it loses."""
        days = max(0, math.ceil((handed_in - self.due).total_seconds() / DAY_S))
        return {
            "submitted_at": handed_in.isoformat(timespec="seconds"),
            "deadline": self.due.isoformat(timespec="seconds"),
            "days": days,
            "penalty": self.policy.penalty(days),
            "policy": self.policy.describe(),
        }


def last_deadline(state: Path) -> Deadline | None:
    """The deadline the gradebook's last run applied (`state`: its DIR/.batch), if it applied one."""
    path = state / DEADLINE_FILE
    try:
        kept = json.loads(path.read_text())
        return Deadline(parse_time(kept["due"], str(path)), LatePolicy(kept["per_day"], kept["max_days"]))
    except (FileNotFoundError, NotADirectoryError):
        return None  # no deadline yet, or no gradebook yet
    except (OSError, ValueError, KeyError, TypeError, UserError) as failure:
        raise UserError(
            f"{path} cannot be read ({failure}): give --deadline again, or --no-deadline to drop the penalties"
        ) from None


def keep_deadline(state: Path, deadline: Deadline | None) -> None:
    """Keep the deadline this run applies for the next runs (none: forget the last one)."""
    path = state / DEADLINE_FILE
    if deadline is None:
        path.unlink(missing_ok=True)
        return
    kept = {"due": deadline.due.isoformat(), "per_day": deadline.policy.per_day, "max_days": deadline.policy.max_days}
    write_whole(path, json.dumps(kept) + "\n")


def hand_in_times(entries: list[Entry], folder: Path, stated: dict[str, datetime] | None = None) -> dict[str, datetime]:
    """When each entry was handed in: as the download states it (`stated`, by id: Gradescope's
    `created_at`), else from `folder/submissions.csv` if there is one (then every other entry must
    have its line), else from the entry's files."""
    stated = stated or {}
    rest = [entry for entry in entries if entry.id not in stated]
    listed = folder / TIMES_FILE
    if not rest or not listed.is_file():
        return {entry.id: stated.get(entry.id) or _modified(entry.path) for entry in entries}
    times = _read_times(listed)
    missing = [entry.id for entry in rest if entry.id not in times]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UserError(f"{listed}: no time for {', '.join(missing[:3])}{more} (a line `id,time` each)")
    return {entry.id: stated.get(entry.id) or times[entry.id] for entry in entries}


def _read_times(path: Path) -> dict[str, datetime]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:  # -sig: as spreadsheets save it
            rows = list(csv.reader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as failure:
        raise UserError(f"{path}: cannot be read ({failure})") from None
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    if "id" not in header or "time" not in header:
        raise UserError(f"{path}: its first line must name the columns id and time")
    at, when = header.index("id"), header.index("time")
    times = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(at, when):
            raise UserError(f"{path} line {number}: expected an id and a time")
        times[row[at].strip()] = parse_time(row[when], f"{path} line {number}")
    return times


def _modified(path: Path) -> datetime:
    """The newest modification time of an entry's files (a folder's own changes when a file is added or removed)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        files = [Path(top, name) for top, _, names in os.walk(path) for name in names]
        newest = max((f.lstat().st_mtime for f in files), default=newest)
    return datetime.fromtimestamp(newest, timezone.utc).astimezone()
