"""What a student reads, in English or Vietnamese: `_()` and `ngettext()` over gettext catalogs.

English is the messages themselves (the msgids); Vietnamese is grader/locale/vi/LC_MESSAGES/grader.po,
compiled in memory when first needed (no binary catalog in the repository). The language is one per
process: the grading child sets it from its options at configure, `grade` and `grade batch` from
theirs. A message with values is written with named placeholders, so that a translation may put
them in another order: `_("conv2 output is {got}, expected {expected}").format(got=..., expected=...)`.

A test's title is the first line of its docstring, translated where the title is made; `extract`
is the Babel extraction method that puts both kinds of message in grader/locale/grader.pot
(assignments/README.md: how to add a message and its translation).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import gettext
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LANGUAGES = ("en", "vi")
DOMAIN = "grader"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
MAPPING = LOCALE_DIR / "babel.cfg"  # which files Babel reads, and how
TEMPLATE = LOCALE_DIR / f"{DOMAIN}.pot"
KEYWORDS = {"_": None, "ngettext": (1, 2), "N_": None}  # N_: a message marked where it is defined, translated later

_current = ["en"]


def po_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def translations(lang: str) -> gettext.NullTranslations:
    """The catalog of `lang`, compiled from its .po (English: the messages as they are)."""
    if lang == "en":
        return gettext.NullTranslations()
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with po_path(lang).open("rb") as po:
        catalog = read_po(po, locale=lang, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)  # fuzzy entries left out: English until checked
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def use(lang: str) -> None:
    """Speak `lang` from now on, in this process."""
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r} (known: {', '.join(LANGUAGES)})")
    _current[0] = lang


def current() -> str:
    return _current[0]


@contextlib.contextmanager
def using(lang: str) -> Iterator[None]:
    """Speak `lang` within the block, then the language spoken before."""
    before = current()
    use(lang)
    try:
        yield
    finally:
        use(before)


def _(message: str) -> str:
    """`message` in the current language."""
    return translations(current()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current()).ngettext(singular, plural, n)


def number(value: float) -> str:
    """`value` as a message shows it, with the current language's separators: 61,706 in English,
    61.706 in Vietnamese (and 1.5, 1,5)."""
    return f"{value:,}".translate(_separators(current()))


@functools.cache
def _separators(lang: str) -> dict[int, str]:
    """Python's `{:,}` separators to `lang`'s, from Babel's locale data. Python writes the number, not
    Babel's format_decimal, which would write the float 2.0 as "2" and 1e-07 as "0.0000001": an English
    message stays what it was."""
    from babel.numbers import get_decimal_symbol, get_group_symbol

    return str.maketrans({",": get_group_symbol(lang), ".": get_decimal_symbol(lang)})


def N_(message: str) -> str:
    """Mark `message` for the catalog where it is defined; `_()` translates it where it is used."""
    return message


PLACE = N_("{file} line {line}")


def place(file: str, line: int) -> str:
    """A line of a student's file, as a reason says it: "lenet.py line 22"."""
    return _(PLACE).format(file=file, line=line)


def place_word() -> str:
    """The word between the file and the line in `place` ("line"), in the current language."""
    return _(PLACE).partition("{file}")[2].partition("{line}")[0].strip()


def default_language(spec_language: str | None = None, environ: dict[str, str] | None = None) -> str:
    """The language when --lang is not given: the spec's `language`, else the locale's (LC_ALL, LANG
    starting with "vi"), else English."""
    if spec_language:
        return spec_language
    env = os.environ if environ is None else environ
    locale = env.get("LC_ALL") or env.get("LC_MESSAGES") or env.get("LANG") or ""
    return "vi" if locale.lower().startswith("vi") else "en"


def docstring_title(doc: str | None) -> str:
    """A test's title: the first line of its docstring, without a final period ("" without one)."""
    lines = (doc or "").strip().splitlines()
    return lines[0].strip().rstrip(".") if lines else ""


def extract(fileobj: Any, keywords: Any, comment_tags: Any, options: dict[str, Any]) -> Iterator[tuple]:
    """Babel's extraction method for the kit's Python: the `_()` messages, and each test's title."""
    from babel.messages.extract import extract_python

    yield from extract_python(fileobj, keywords, comment_tags, options)
    if not Path(getattr(fileobj, "name", "")).name.startswith("test_"):
        return
    fileobj.seek(0)
    tree = ast.parse(fileobj.read())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            title = docstring_title(ast.get_docstring(node))
            if title:
                yield node.lineno, None, title, ["a test's title"]


def extract_messages(root: Path) -> Any:
    """The catalog of every message in the kit's sources (grader/, assignments/), extracted afresh."""
    from babel.messages.catalog import Catalog
    from babel.messages.extract import extract_from_dir
    from babel.messages.frontend import parse_mapping_cfg

    with MAPPING.open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    catalog = Catalog(domain=DOMAIN)
    for folder in ("grader", "assignments"):
        found = extract_from_dir(root / folder, method_map, options_map, keywords=KEYWORDS, comment_tags=("i18n:",))
        for filename, lineno, message, comments, context in found:
            catalog.add(message, None, [(f"{folder}/{filename}", lineno)], auto_comments=comments, context=context)
    return catalog
