"""`grade review`'s page: one question across students, each answer's Markdown rendered inert.

An answer is a hand-in's text: Markdown without its raw HTML (escaped), without images (their text
instead: nothing remote is ever loaded) and without links (their text, then the address as text).
Every text from a hand-in or a TA is escaped here; the page's own style and script are
grader/templates/review.html, run under the nonce of its response (grader/review_server.py).
"""

from __future__ import annotations

import functools
import html
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from markdown_it import MarkdownIt

from grader.i18n import N_, _, current
from grader.manual import Mark
from grader.review import Progress, Review, Row, rubric_points
from grader.spec import Question

TEMPLATE = Path(__file__).resolve().parent / "templates" / "review.html"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
KEYS = N_(
    "Keys: j/k or ↓/↑ next/previous student · 1-9 tick a rubric item · p points · c comment · "
    "Esc leave the field · r keep the mark as it is (reviewed) · n/N next/previous question"
)


@functools.cache
def _markdown() -> MarkdownIt:
    """CommonMark with raw HTML escaped, images as their text, links as their text and address."""
    md = MarkdownIt("commonmark", {"html": False})

    def image(self: Any, tokens: list, idx: int, options: Any, env: Any) -> str:
        alt = self.renderInlineAsText(tokens[idx].children, options, env)
        return f'<span class="inert">[{html.escape(_("image"))}: {html.escape(alt)}]</span>'

    def link_open(self: Any, tokens: list, idx: int, options: Any, env: Any) -> str:
        return '<span class="inert">'

    def link_close(self: Any, tokens: list, idx: int, options: Any, env: Any) -> str:
        opening = next(t for t in reversed(tokens[:idx]) if t.type == "link_open")
        if opening.markup == "autolink":  # its text is the address
            return "</span>"
        return f'</span> <span class="url">&lt;{html.escape(str(opening.attrGet("href") or ""))}&gt;</span>'

    for rule, render in (("image", image), ("link_open", link_open), ("link_close", link_close)):
        md.add_render_rule(rule, render)
    return md


def markdown(text: str) -> str:
    """A hand-in's Markdown as HTML that runs nothing, loads nothing and links nowhere."""
    return _markdown().render(text)


def question_path(token: str, question: Question) -> str:
    return f"/{token}/q/{quote(question.id, safe='')}"


def count_line(progress: Progress) -> str:
    return _("{marked} of {total} marked, {stale} to review again").format(
        marked=progress.marked, total=progress.total, stale=progress.stale
    )


def tab_label(question: Question, progress: Progress) -> str:
    """A question in the switcher: its id and how many of its answers are marked."""
    return f"{question.id} {progress.marked}/{progress.total}" + (" !" if progress.stale else "")


def mark_line(mark: Mark | None, question: Question) -> str:
    """What a mark says under an answer: "2 of 3 points, by tuan at 2025-03-14 10:22"."""
    if mark is None:
        return _("not marked")
    when = mark.time.replace("T", " ")[:16]
    return _("{points} of {max} points, by {grader} at {time}").format(
        points=f"{mark.points:g}", max=f"{question.points:g}", grader=mark.grader, time=when
    )


def saved_line(mark: Mark | None, question: Question) -> str:
    """What a mark says once the server saved it."""
    return _("saved: {mark}").format(mark=mark_line(mark, question))


def page(review: Review, question: Question, token: str, nonce: str) -> str:
    """The page of `question`: switcher, title, rubric, count, keys, then each student's answer and mark."""
    marks = review.marks()
    questions = review.questions
    position = questions.index(question)
    tabs = "".join(
        f'<a href="{question_path(token, q)}"{" class=current" if q is question else ""}>'
        f"{html.escape(tab_label(q, review.progress(q, marks)))}</a>"
        for q in questions
    )
    rubric = "".join(
        f"<li><kbd>{n}</kbd> {html.escape(item.shown_text)} <b>{item.points:+g}</b></li>"
        for n, item in enumerate(question.rubric, start=1)
    )
    header = (
        f'<header><nav aria-label="{html.escape(_("questions"))}">{tabs}</nav>'
        f"<h1>{html.escape(question.id)}: {html.escape(question.shown_title)} "
        f"<small>({html.escape(_('{points} points').format(points=f'{question.points:g}'))})</small></h1>"
        f'<ol class="rubric">{rubric}</ol>'
        f'<p id="count">{html.escape(count_line(review.progress(question, marks)))}</p>'
        f'<p class="keys">{html.escape(_(KEYS))}</p></header>'
    )
    rows = "".join(_row(row, question, number) for number, row in enumerate(review.rows(question, marks)))
    data = {
        "token": token,
        "save": f"/{token}/mark",
        "question": question.id,
        "next": question_path(token, questions[(position + 1) % len(questions)]),
        "previous": question_path(token, questions[position - 1]),
        "saving": _("saving…"),
        "failed": _("not saved: {error}"),
    }
    fields = {
        "lang": current(),
        "nonce": nonce,
        "title": html.escape(f"{question.id} · {review.spec.name} · grade review"),
        "data": " ".join(f'data-{name}="{html.escape(value)}"' for name, value in data.items()),
        "content": f"{header}<main>{rows}</main>",
    }
    return _PLACEHOLDER.sub(lambda found: fields[found[1]], TEMPLATE.read_text(encoding="utf-8"))


def _row(row: Row, question: Question, number: int) -> str:
    """One student's answer and mark; the fields hold the mark so far."""
    mark = row.mark
    ticked = mark.rubric if mark else ()
    typed = mark is not None and mark.points != rubric_points(question, mark.rubric)
    boxes = "".join(
        f'<label><input type="checkbox" data-item="{html.escape(item.id)}"{" checked" if item.id in ticked else ""}>'
        f" <kbd>{n}</kbd> {html.escape(item.shown_text)}</label>"
        for n, item in enumerate(question.rubric, start=1)
    )
    flags = f'<p class="stale">{html.escape(_("answer changed since marked: review again"))}</p>' if row.stale else ""
    if row.answer.answered:
        source = f'<p class="source">{html.escape(row.answer.source)}</p>' if row.answer.source else ""
        answer = f'<div class="answer">{markdown(row.answer.text)}</div>{source}'
    else:
        answer = f'<p class="none">{html.escape(_("not answered"))}</p>'
    points = f"{mark.points:g}" if mark else ""
    return (
        f'<section class="student" id="s{number}" data-student="{html.escape(row.student)}" '
        f'data-typed="{int(typed)}" data-state="{"marked" if mark else "unmarked"}">'
        f"<h2>{html.escape(row.student)}</h2>{flags}{answer}"
        f'<div class="mark">{boxes}'
        f'<label>{html.escape(_("points"))} <input class="points" inputmode="decimal" autocomplete="off" '
        f'value="{points}" placeholder="{html.escape(_("ticked"))}"> / {question.points:g}</label>'
        f'<label class="comment">{html.escape(_("comment"))} <textarea class="comment" rows="2">'
        f"{html.escape(mark.comment if mark else '')}</textarea></label>"
        f'<p class="status">{html.escape(mark_line(mark, question))}</p></div></section>'
    )
