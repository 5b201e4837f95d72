"""Vietnamese and English: every message in both, the template in step with the sources, and a grading
in each language (grader/i18n.py; how to add a message: assignments/README.md)."""

from __future__ import annotations

import ast
import json
import re
import string
import subprocess
import sys

import pytest
from babel.messages.pofile import read_po

from grader import i18n
from grader.batch.store import grader_key
from grader.errors import UserError
from grader.options import GradingOptions
from grader.spec import load_spec
from tests.kit import ROOT, make_variant, spec_of

PLACEHOLDER = re.compile(r"\{[^{}]*\}")
VIETNAMESE = re.compile(r"[ăâđêôơưàáảãạằắẳẵặầấẩẫậèéẻẽẹềếểễệìíỉĩịòóỏõọồốổỗộờớởỡợùúủũụừứửữựỳýỷỹỵ]", re.IGNORECASE)
# a half-done assignment2: lenet.py complete, two of training.py's blanks left open
HALF_DONE = {
    "name": "half done",
    "replace": [["training.py", "net.eval()", "None"], ["training.py", "optimizer.zero_grad()", "None"]],
}


def ids(catalog) -> set:
    return {message.id for message in catalog if message.id}


@pytest.fixture(scope="module")
def extracted():
    return i18n.extract_messages(ROOT)


@pytest.fixture(scope="module")
def vietnamese():
    with i18n.po_path("vi").open("rb") as po:
        return read_po(po, locale="vi")


def test_the_template_is_up_to_date_with_the_sources(extracted):
    with i18n.TEMPLATE.open("rb") as pot:
        template = ids(read_po(pot))
    found = ids(extracted)
    assert found - template == set(), "messages missing from grader.pot: extract again (assignments/README.md)"
    assert template - found == set(), "messages in grader.pot that no source has any more: extract again"


def test_every_message_has_a_vietnamese_translation_with_the_same_placeholders(extracted, vietnamese):
    translated = {message.id: message for message in vietnamese if message.id}
    untranslated, mismatched = [], []
    for msgid in sorted(ids(extracted), key=str):
        message = translated.get(msgid)
        strings = [message.string] if message and isinstance(message.string, str) else list(message.string or ())
        if message is None or message.fuzzy or not all(strings):
            untranslated.append(msgid)
            continue
        singular = msgid if isinstance(msgid, str) else msgid[0]
        wanted = sorted(PLACEHOLDER.findall(singular))
        mismatched += [(msgid, s) for s in strings if sorted(PLACEHOLDER.findall(s)) != wanted]
    assert not untranslated, f"{len(untranslated)} messages without Vietnamese, the first {untranslated[:5]}"
    assert not mismatched, f"translations whose placeholders differ from their message's: {mismatched[:5]}"


def formatted_messages():
    """(place, msgid, keyword names) of every `_("...").format(...)` call in grader/ and assignments/."""
    for path in sorted([*(ROOT / "grader").rglob("*.py"), *(ROOT / "assignments").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"):
                continue
            inner = node.func.value
            if not (isinstance(inner, ast.Call) and getattr(inner.func, "id", "") == "_" and inner.args):
                continue
            if isinstance(inner.args[0], ast.Constant) and all(k.arg for k in node.keywords):  # no **kwargs
                yield f"{path.relative_to(ROOT)}:{node.lineno}", inner.args[0].value, {k.arg for k in node.keywords}


def test_every_formatted_message_is_given_each_of_its_placeholders():
    """A message shows only when its test fails: a placeholder without its value would fail the grading then."""
    found = list(formatted_messages())
    assert len(found) > 500
    for place, msgid, given in found:
        fields = {name for _, name, _, _ in string.Formatter().parse(msgid) if name}
        assert fields == given, f"{place}: {msgid!r} has {sorted(fields)}, .format() gives {sorted(given)}"


def test_messages_are_translated_and_the_language_restored():
    message = "blanks filled {filled}/{total}"
    assert i18n.current() == "en" and i18n._(message) == message
    with i18n.using("vi"):
        assert i18n._(message).format(filled=24, total=26) == "đã điền 24/26 chỗ trống"
        assert i18n.ngettext("{days} day late ({policy})", "{days} days late ({policy})", 2).startswith("muộn")
    assert i18n.current() == "en"
    with pytest.raises(ValueError):
        i18n.use("fr")


def test_a_reason_writes_its_numbers_as_its_language_does(extracted):
    """61,706 in English as before, 61.706 in Vietnamese; no message formats a number itself ({x:,})."""
    message = "net has {total} parameters, expected {total_parameters}"

    def reason() -> str:
        return i18n._(message).format(total=i18n.number(61706), total_parameters=i18n.number(1257014))

    assert reason() == "net has 61,706 parameters, expected 1,257,014"
    assert i18n.number(5.645) == "5.645" and i18n.number(2.0) == "2.0"  # as `{:,}` writes a float
    with i18n.using("vi"):
        assert reason() == "net có 61.706 tham số, cần 1.257.014"
        assert i18n.number(5.645) == "5,645"
    itself = [msgid for msgid in ids(extracted) if re.search(r"\{\w*:[^{}]*,[^{}]*\}", str(msgid))]
    assert not itself, f"messages that write a number with English separators, use i18n.number: {itself[:5]}"


def test_the_language_comes_from_the_spec_else_the_locale_else_english():
    assert i18n.default_language("vi", {"LANG": "en_US.UTF-8"}) == "vi"
    assert i18n.default_language(None, {"LANG": "vi_VN.UTF-8"}) == "vi"
    assert i18n.default_language(None, {"LC_ALL": "vi_VN", "LANG": "en_US"}) == "vi"
    assert i18n.default_language(None, {"LANG": "C.UTF-8"}) == "en"
    assert i18n.default_language(None, {}) == "en"
    assert spec_of("assignment2").language is None  # no spec of ours sets it


def test_a_spec_language_that_is_neither_is_refused(tmp_path):
    folder = tmp_path / "assignments" / "a"
    folder.mkdir(parents=True)
    spec = (ROOT / "assignments" / "assignment2" / "spec.toml").read_text()
    (folder / "spec.toml").write_text('language = "fr"\n' + spec)
    with pytest.raises(UserError, match="language = 'fr' is not one of en, vi"):
        load_spec("a", tmp_path)


def test_the_language_travels_to_the_grading_child_but_not_into_a_batch_resume_key():
    options = GradingOptions(lang="vi")
    assert GradingOptions.from_json(options.to_json()).lang == "vi"
    spec = spec_of("assignment2")
    assert grader_key(spec, options) == grader_key(spec, GradingOptions())  # a language re-renders, never regrades


def grade_cli(folder, lang: str) -> tuple[dict, str]:
    """`grade assignment2 --lang LANG` on `folder`, training left out: the JSON report and the table."""
    command = ["-m", "grader", "assignment2", "--submission", str(folder), "--marks", "not accuracy"]
    done = subprocess.run(
        [sys.executable, *command, "--lang", lang, "--json", "-"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), done.stderr


@pytest.fixture(scope="module")
def half_done(tmp_path_factory):
    return make_variant(spec_of("assignment2"), HALF_DONE, tmp_path_factory.mktemp("i18n") / "half")


def test_a_half_done_folder_graded_in_vietnamese(half_done):
    report, table = grade_cli(half_done, "vi")
    failed = [t for t in report["tests"] if t["status"] == "failed"]
    assert failed and report["score"] < report["max_score"]
    for test in failed:
        assert VIETNAMESE.search(test["name"]), test["name"]
        assert test["output"].startswith("chưa điền: training.py dòng "), test
    assert "chưa điền: training.py dòng 57: None  # zero the gradients" in {t["output"] for t in failed}
    assert report["title"] == spec_of("assignment2").title_vi
    assert "đã điền 24/26 chỗ trống" in report["output"] and " điểm (trên " in report["output"]
    assert "đã điền 24/26 chỗ trống" in table.replace("\n", " ") and "blanks filled" not in table


def test_a_half_done_folder_graded_in_english_is_unchanged(half_done):
    report, table = grade_cli(half_done, "en")
    failed = [t for t in report["tests"] if t["status"] == "failed"]
    assert "train_ch6: zeroes the gradients before every batch" in {t["name"] for t in failed}
    assert "not filled in yet: training.py line 57: None  # zero the gradients" in {t["output"] for t in failed}
    assert report["title"] == "LeNet and train_ch6"
    assert "blanks filled 24/26" in report["output"]
    assert "points (of 43: 10 points of tests left out" in report["output"]
    assert not VIETNAMESE.search(table)
