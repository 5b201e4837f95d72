"""The gradebook of a batch, rendered from the students' reports: the batch's counterpart of render.

DIR/grades.csv (a row per student), DIR/junit.xml (a suite per student), DIR/summary.md (the
class's statistics), DIR/index.html (the class page: the same, with charts, linking each student's
feedback.html), and the same statistics on the terminal.
"""

from __future__ import annotations

import csv
import io
import statistics
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from tabulate import tabulate

from grader import render, render_html
from grader.batch.store import write_whole

if TYPE_CHECKING:
    from grader.batch.run import BatchResult, Outcome


def gradebook_rows(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """One row per student: totals, status, time, the limits tripped, then each test's points."""
    return [
        {
            "id": o.id,
            "status": o.status,
            "limits": " ".join(o.limits),
            "isolation": o.report.isolation,
            **render.csv_row(o.report),
        }
        for o in outcomes
    ]


def write_gradebook(out: Path, outcomes: list[Outcome], show_hidden: bool = False) -> None:
    """grades.csv, junit.xml, summary.md and index.html, from the students' reports."""
    rows = gradebook_rows(outcomes)
    first = ["id", "score", "max_score", "percent", "status", "duration_s", "limits", "problem", "profile", "isolation"]
    columns = first + [k for k in dict.fromkeys(k for row in rows for k in row) if k not in first]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_whole(out / "grades.csv", text.getvalue())
    suites = ET.Element("testsuites", name=outcomes[0].report.assignment if outcomes else "")
    for outcome in outcomes:
        suite = ET.fromstring(render.junit(outcome.report, show_hidden))
        suite.set("name", outcome.id)
        suites.append(suite)
    write_whole(out / "junit.xml", ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n")
    write_whole(out / "summary.md", summary_markdown(outcomes))
    write_whole(out / "index.html", render_html.class_page(outcomes, summarize(outcomes)))


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    """Class statistics: scores, their distribution, and each test's pass rate and commonest reason."""
    percents = [o.report.percent for o in outcomes]
    bins = Counter(min(int(p // 10), 9) for p in percents)
    tests: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:
        for test in outcome.report.tests:
            entry = tests.setdefault(
                test.nodeid, {"name": test.name, "max_score": test.max_score, "passed": 0, "points": [], "reasons": []}
            )
            entry["passed"] += test.status == "passed"
            entry["points"].append(test.score)
            if test.status != "passed":
                entry["reasons"].append(test.reason.splitlines()[0] if test.reason else "")
    per_test = []
    for entry in tests.values():
        reasons = Counter(entry["reasons"]).most_common(1)
        per_test.append(
            {
                "name": entry["name"],
                "max_score": entry["max_score"],
                "pass_rate": entry["passed"] / len(outcomes),
                "mean": statistics.fmean(entry["points"]),
                "common_reason": f"{reasons[0][0]} ({reasons[0][1]})" if reasons else "",
            }
        )
    return {
        "students": len(outcomes),
        "status": dict(Counter(o.status for o in outcomes)),
        "mean": statistics.fmean(percents) if percents else 0.0,
        "median": statistics.median(percents) if percents else 0.0,
        "distribution": [(f"{10 * b}-{10 * b + 9 if b < 9 else 100}%", bins.get(b, 0)) for b in range(10)],
        "tests": sorted(per_test, key=lambda t: t["pass_rate"]),
    }


def summary_markdown(outcomes: list[Outcome]) -> str:
    stats = summarize(outcomes)
    status = ", ".join(f"{n} {s}" for s, n in sorted(stats["status"].items()))
    lines = [
        f"### {outcomes[0].report.assignment if outcomes else ''}: {stats['students']} submissions ({status})",
        "",
        f"mean {stats['mean']:.1f}% · median {stats['median']:.1f}%",
        "",
        tabulate(
            [(band, n, "█" * n) for band, n in stats["distribution"]],
            headers=("score", "students", ""),
            tablefmt="github",
        ),
        "",
        "Tests, the most failed first:",
        "",
        tabulate(
            [
                (t["name"], f"{t['max_score']:g}", f"{t['pass_rate']:.0%}", f"{t['mean']:.2g}", t["common_reason"])
                for t in stats["tests"]
            ],
            headers=("test", "points", "passed", "mean points", "commonest reason of failure"),
            tablefmt="github",
        ),
    ]
    return "\n".join(lines) + "\n"


def print_summary(result: BatchResult, console: Console) -> None:
    """The end of a batch on the terminal: totals, distribution, the most failed tests."""
    stats = summarize(result.outcomes)
    status = ", ".join(f"{n} {s}" for s, n in sorted(stats["status"].items()))
    console.print(
        f"[bold]{stats['students']} submissions[/] ({status}; {result.graded_now} graded now) · "
        f"mean {stats['mean']:.1f}% · median {stats['median']:.1f}%"
    )
    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("test", "points", "passed", "commonest reason of failure"):
        table.add_column(column, overflow="fold")
    for test in stats["tests"]:
        table.add_row(test["name"], f"{test['max_score']:g}", f"{test['pass_rate']:.0%}", test["common_reason"])
    console.print(table)
    console.print(" · ".join(f"{band}: {n}" for band, n in stats["distribution"] if n))
    console.print(f"gradebook: {result.out / 'grades.csv'} · reports: {result.out / 'students'}/<id>/")
