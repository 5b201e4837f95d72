"""The HTML formats: a student's report page (`grade --html`, feedback.html) and a batch's class page.

Both are rendered from the reports (the JSON documents), and each is one self-contained file: the
styles inline, the pictures as base64 PNG data URLs, no script, and a Content-Security-Policy that
lets the page load nothing else, so it opens offline and shows the same everywhere. Every text
comes through `html.escape`: a reason may quote what a submission printed.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from grader import figures, i18n, render
from grader.i18n import _
from grader.render import _footer, _listed, _note, _points, details, load_errors, mark_state, rubric_line, written
from grader.report import Report

if TYPE_CHECKING:
    from grader.batch.outcomes import Outcome
    from grader.course import Term

# Nothing but this page, its inline styles and its data-URL images: no network, no script.
_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1d2430; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.4rem; margin: 0 0 .2rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
.muted { color: #5c6677; } .small { font-size: .85rem; }
.score { font-size: 1.2rem; margin: .8rem 0 .3rem; } .score b { font-size: 1.7rem; }
.bar { height: .55rem; background: #e4e8ef; border-radius: .3rem; overflow: hidden; margin-bottom: 1rem; }
.bar span { display: block; height: 100%; background: #2f7d4f; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .35rem .5rem; border-bottom: 1px solid #e4e8ef; }
td.points, th.points { text-align: right; white-space: nowrap; }
.mark { width: 1.2rem; font-weight: bold; } .passed .mark { color: #2f7d4f; } .failed .mark { color: #b3261e; }
.note { color: #5c6677; font-size: .9rem; white-space: pre-wrap; } .failed .note { color: #8a4b00; }
pre.output { background: #f4f5f7; padding: .4rem; margin: .3rem 0 0; white-space: pre-wrap; font-size: .85rem; }
pre.errors { background: #fdecea; color: #8c1d18; padding: .6rem; white-space: pre-wrap; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; }
figure img { max-width: 100%; border: 1px solid #e4e8ef; }
figcaption { font-size: .8rem; color: #5c6677; }
footer { margin-top: 1.5rem; }
"""


def _page(title: str, body: list[str], style: str = "") -> str:
    """The page around `body`: the kit's styles and then `style`, its policy, nothing loaded."""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            f'<html lang="{i18n.current()}">',
            '<head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{_STYLE}{style}</style></head>",
            "<body>",
            *body,
            "</body></html>",
            "",
        ]
    )


def _bar(percent: float) -> str:
    return f'<div class="bar"><span style="width: {max(0.0, min(100.0, percent)):.1f}%"></span></div>'


def _lines(lines: Sequence[str], css: str) -> str:
    return "".join(f'<p class="{css}">{html.escape(line)}</p>' for line in lines)


def report_page(report: Report, show_hidden: bool = False) -> str:
    """A student's report as one HTML page: the score, each test with its reason and its pictures."""
    e = html.escape
    body = [
        f"<h1>{e(report.assignment)} · {e(report.title)}</h1>",
        f'<p class="muted">{e(Path(report.submission).name)}</p>',
        f'<p class="score">{_score(report)}</p>',
        _bar(report.final_percent),
        f"<p>{e(report.summary())}</p>",
    ]
    if report.load_errors:
        body.append(f'<pre class="errors">{e(chr(10).join(load_errors(report)))}</pre>')
    points = _("points")
    head = _headers(("", _("test"), points), points)
    rows = _listed(report, show_hidden)
    body.append(f"<table><thead><tr>{head}</tr></thead><tbody>" if rows else "")
    for name, test in rows:
        status = "passed" if test.status == "passed" else "failed"
        note = f'<div class="note">{e(_note(test))}</div>' if _note(test) else ""
        note += f'<pre class="output">{e(details(test))}</pre>' if details(test) else ""
        pictures = f'<div class="figures">{figures.image_tags(test.images)}</div>' if test.images else ""
        body.append(
            f'<tr class="{status}"><td class="mark">{"✓" if status == "passed" else "✗"}</td>'
            f'<td>{e(name)}{note}{pictures}</td><td class="points">{_points(test)}</td></tr>'
        )
    body += ["</tbody></table>" if rows else "", _written(report)]
    body.append(f"<footer>{_lines(_footer(report), 'muted small')}</footer>")
    return _page(f"{report.assignment}: {report.final_score:g} / {report.final_max:g}", body)


def _written(report: Report) -> str:
    """The written answers of a report page: a row per question, its points or why it has none, the ticked
    rubric items and the TA's comment (a TA's text, escaped as every text is); "" without questions."""
    if not report.answers:
        return ""
    e = html.escape
    rows = []
    for answer, mark in written(report):
        cell = f"<b>{e(answer['question'])}</b> · {e(answer.get('title', ''))}"
        ticked = [rubric_line(item) for item in mark["rubric"]] if mark else []
        cell += f"<ul>{''.join(f'<li>{e(text)} ({points})</li>' for text, points in ticked)}</ul>" if ticked else ""
        cell += f'<div class="note">{e(mark["comment"])}</div>' if mark and mark["comment"] else ""
        rows.append(f'<tr><td>{cell}</td><td class="points">{e(mark_state(answer, mark))}</td></tr>')
    head = _headers((_("question"), _("points")), _("points"))
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return _heading(render.written_heading(report)) + table


def _score(report: Report) -> str:
    """The grade, "<b>8</b> / 10 points (80%) after the late penalty", in the page's language: the
    summary below it says the tests' points and the penalty, as feedback.md's does."""
    score = html.escape(_("{score} / {max_score} points ({percent}%)"))
    total = score.format(
        score=f"<b>{report.final_score:g}</b>", max_score=f"{report.final_max:g}", percent=f"{report.final_percent:.0f}"
    )
    return total + html.escape(render.after_penalty(report))


def class_page(outcomes: list[Outcome], stats: dict[str, Any]) -> str:
    """A batch's class page: the score histogram, each test's pass rate, the commonest reasons of
    failure, and every student's line with a link to their feedback.html. In the batch's language,
    as summary.md is."""
    e = html.escape
    assignment = outcomes[0].report.assignment if outcomes else ""
    title = outcomes[0].report.title if outcomes else ""
    bands, counts = zip(*stats["distribution"], strict=True)
    histogram = figures.bars(_("score distribution"), bands, counts, _("students"))
    tests = stats["tests"]
    pass_rates = figures.bars(
        _("each test's pass rate"),
        [t["name"] for t in tests],
        [100 * t["pass_rate"] for t in tests],
        _("% passed"),
        True,
        100,
    )
    body = [
        f"<h1>{e(assignment)} · {e(title)}</h1>",
        f'<p class="score">{e(render.class_headline(stats))}</p>',
        f"<p>{e(render.class_scores(stats))}</p>",
        *([f"<p>{e(stats['left_out'])}</p>"] if stats["left_out"] else []),
        _chart(histogram),
        _heading(_("Tests, the most failed first")),
        _chart(pass_rates),
        _table(
            (_("test"), _("points"), _("passed"), _("mean points"), _(render.COMMONEST)),
            [
                (t["name"], f"{t['max_score']:g}", f"{t['pass_rate']:.0%}", f"{t['mean']:.2g}", t["common_reason"])
                for t in tests
            ],
        ),
        _heading(_("The commonest reasons of failure")),
        _table((_("reason"), _("students"), _("tests")), _common_reasons(outcomes)),
        _heading(_("Students")),
        _students(outcomes),
    ]
    return _page(f"{assignment}: {render.class_headline(stats)}", body)


def _chart(figure: dict[str, Any] | None) -> str:
    """A chart drawn for the page (nothing without matplotlib)."""
    png = figures.draw(figure) if figure is not None else None
    return figures.image_tags([{"label": figure["title"], "url": figures.data_url(png)}]) if figure and png else ""


def _heading(text: str) -> str:
    return f"<h2>{html.escape(text)}</h2>"


def _headers(headers: Sequence[str], *numeric: str) -> str:
    """Header cells; the `numeric` ones right-aligned, as their columns are."""
    return "".join(f"<th{' class=points' if h in numeric else ''}>{html.escape(h)}</th>" for h in headers)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    e = html.escape
    head = _headers(headers)
    cells = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>"


def _common_reasons(outcomes: list[Outcome], count: int = 10) -> list[tuple[str, str, str]]:
    """The reasons of failure that most students share (a reason's first line, once per student)."""
    students: Counter[str] = Counter()
    tests: dict[str, Counter[str]] = {}
    for outcome in outcomes:
        reasons = {}
        for test in outcome.report.tests:
            if test.status != "passed" and test.reason:
                reasons.setdefault(test.reason.splitlines()[0], []).append(test.name)
        for reason, names in reasons.items():
            students[reason] += 1
            tests.setdefault(reason, Counter()).update(names)
    return [
        (reason, str(n), ", ".join(name for name, _ in tests[reason].most_common(3)))
        for reason, n in students.most_common(count)
    ]


def _students(outcomes: list[Outcome]) -> str:
    """A line per student: the tests' points; where a deadline applied, the days late and the penalty;
    where the assignment has written questions, their points; with either, the grade; the grade's percent
    (as the LMS files, none where the grader failed), the status."""
    e = html.escape
    deadline = any(o.report.late for o in outcomes)
    questions = any(o.report.written_max for o in outcomes)
    rows = []
    for o in outcomes:
        report, graded = o.report, o.grade is not None
        numbers = [f"{report.score:g} / {report.max_score:g}"]
        if deadline:
            days = report.late.get("days", 0)
            numbers += [f"{days}" if days else "", f"-{report.late['penalty'] * 100:g}%" if days else ""]
        numbers += [f"{report.written_points:g} / {report.written_max:g}"] if questions else []
        if deadline or questions:
            numbers.append(f"{o.grade:g} / {report.final_max:g}" if graded else "")
        numbers.append(f"{report.final_percent:.0f}%" if graded else "")
        link = f'<a href="students/{quote(o.id)}/feedback.html">{e(o.id)}</a>'
        cells = "".join(f"<td class='points'>{number}</td>" for number in numbers)
        status = e(_(render.STATUSES.get(o.status, o.status)))
        rows.append(f"<tr><td>{link}</td>{cells}<td>{status}</td><td>{e(report.problem)}</td></tr>")
    score = _("score")
    numeric = (_("days late"), _("penalty")) if deadline else ()
    numeric += (_("written answers"),) if questions else ()
    numeric += (_("final score"),) if deadline or questions else ()
    head = _headers((_("student"), score, *numeric, "%", _("status"), ""), score, *numeric, "%")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def course_page(term: Term) -> str:
    """The term's page (grade course): what is missing, each assignment's weight and distribution, the
    course percents', and every student's line: each assignment's percent, the bank's late days spent,
    the course percent and the notes. The instructor's, in the language spoken."""
    course = term.course
    names = [a.name for a in course.assignments]
    total = sum(a.weight for a in course.assignments)
    rules = [f"{_('students')}: {len(term.students)}"]
    rules += [f"{_('lowest dropped')}: {course.drop_lowest}"] if course.drop_lowest else []
    rules += [f"{_('late days for the term')}: {course.late_days}"] if course.late_days else []
    assignments = [
        (a.name, f"{100 * a.weight / total:.3g}%", *_spread([s.marks[a.name].percent for s in term.students]))
        for a in course.assignments
    ]
    charts = [(_("course percent"), term.distribution())] + [(name, term.distribution(name)) for name in names]
    charts = [(title, bands) for title, bands in charts if any(count for _band, count in bands)]  # none: no chart
    body = [
        f"<h1>{html.escape(course.title)}</h1>",
        f'<p class="score">{html.escape(" · ".join(rules))}</p>',
        *([_heading(_("Missing")), _lines(term.problems, "note")] if term.problems else []),
        _table((_("assignment"), _("weight"), _("graded"), _("mean")), assignments),
        *(_chart(figures.bars(title, *zip(*bands, strict=True), _("students"))) for title, bands in charts),
        _heading(_("Students")),
        _table(
            (_("student"), *names, _("late days"), _("course percent"), _("notes")),
            [
                (
                    s.id,
                    *(_percent(s.marks[name].percent) for name in names),
                    str(s.late_days or ""),
                    _percent(s.percent),
                    "; ".join(s.notes),
                )
                for s in term.students
            ],
        ),
    ]
    return _page(course.title, body)


def _spread(percents: Sequence[float | None]) -> tuple[str, str]:
    """How many have a percent, and their mean."""
    kept = [p for p in percents if p is not None]
    return str(len(kept)), _percent(sum(kept) / len(kept) if kept else None)


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}%"
