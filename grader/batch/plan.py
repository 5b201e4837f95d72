"""Who a batch grades now, before any student code runs. Every hand-in is read once into a
snapshot (grader.batch.store) and then, by its resume key (the grader's key and the snapshot's
digest), it is one of:

- resumed: stored, and current (the same files, tests, spec, grader and scoring options);
- kept as stored: a regrade of others (`--only ID`, `--failed`) leaves it as it is; one never
  graded is left out of the gradebook;
- unreadable: reading it is all the grading there is (a zero report saying why);
- pending: graded now. A regrade grades those it picks, `--force` everyone, whatever is stored.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from grader.batch.outcomes import Outcome, machine_failed
from grader.batch.store import Entry, Snapshot, Store, Stored, take_snapshot
from grader.errors import UserError
from grader.spec import Spec


@dataclass
class Plan:
    """A batch's students, sorted as above (each list in the order of the hand-ins)."""

    kept: dict[str, Outcome] = field(default_factory=dict)  # as stored: resumed, or not picked by a regrade
    unreadable: list[tuple[Snapshot, str, bool]] = field(default_factory=list)  # snapshot, key, resumed
    pending: list[tuple[Snapshot, str]] = field(default_factory=list)  # snapshot, key: graded now
    left_out: list[str] = field(default_factory=list)  # not picked by a regrade, and never graded


def plan(
    spec: Spec,
    entries: list[Entry],
    store: Store,
    snapshots: Path,
    key: str,
    only: tuple[str, ...] = (),
    failed: bool = False,
    force: bool = False,
) -> Plan:
    """Sort `entries` for a run whose grader key is `key`: those a regrade (`only`, `failed`) does not
    pick are kept as `store` holds them; the others are read into a snapshot under `snapshots`, and
    resumed where stored and current, unless `force`."""
    last = {entry.id: store.stored(entry.id) for entry in entries}
    chosen = picked(last, only, failed)
    found = Plan()
    for entry in entries:
        stored = last[entry.id]
        if chosen is not None and entry.id not in chosen:  # a regrade of others: kept as stored
            if stored:
                found.kept[entry.id] = Outcome(entry.id, stored.report, stored.status, stored.key, resumed=True)
            else:
                found.left_out.append(entry.id)
            continue
        snap = take_snapshot(entry, spec, snapshots / entry.id)
        student_key = f"{key}:{snap.digest}"
        resumed = chosen is None and not force and stored is not None and stored.current(student_key)
        if snap.problem:  # said again in this run's language: reading it is all the grading there is
            found.unreadable.append((snap, student_key, resumed))
        elif resumed:
            assert stored is not None
            found.kept[entry.id] = Outcome(entry.id, stored.report, stored.status, student_key, resumed=True)
        else:
            found.pending.append((snap, student_key))
    return found


def check_ids(only: tuple[str, ...], entries: list[Entry], submissions: Path) -> None:
    """Every id of --only names a submission: a typo is one line, with the nearest name."""
    ids = [e.id for e in entries]
    for student in only:
        if student not in ids:
            near = difflib.get_close_matches(student, ids, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise UserError(f"--only {student}: {submissions} has no submission of that name{hint}")


def picked(last: dict[str, Stored | None], only: tuple[str, ...], failed: bool) -> set[str] | None:
    """The students a regrade grades again: those named, and with `failed` those whose last grading
    the grader or a busy machine failed; None: no regrade, every student as resuming decides."""
    if not only and not failed:
        return None
    broken = {s for s, stored in last.items() if stored and (stored.status == "error" or machine_failed(stored.report))}
    return set(only) | (broken if failed else set())
