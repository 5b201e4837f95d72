"""Assignment specs: `assignments/<name>/spec.toml`, read without importing torch or any test."""

from __future__ import annotations

import difflib
import functools
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from grader.environment import ROOT_ENV
from grader.errors import UserError
from grader.i18n import LANGUAGES, _, current

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PROFILES = ("quick", "full")


@dataclass(frozen=True)
class Limits:
    """What one submission may use while its tests run."""

    test_timeout_s: float = 60.0
    total_timeout_s: float = 900.0
    memory_mb: int = 4096
    output_kb: int = 256
    file_mb: int = 64  # each file a probe writes
    processes: int = 64
    result_mb: int = 256  # what one probe may hand back
    gpu_share: float = 0.25  # of one GPU, what a hand-in asks a Ray cluster for (several share a GPU)

    @property
    def scratch_mb(self) -> int:
        """All the files a probe may write (its /tmp and /dev/shm each)."""
        return 4 * self.file_mb


@dataclass(frozen=True)
class Profile:
    """How much training a profile allows and what it must reach.

    `budget` holds the assignment's own knobs (steps, batch size, learning rate...);
    `min_accuracy` is the calibrated threshold of the tests marked `accuracy`.
    """

    name: str
    device: str
    dataset: str | None = None
    min_accuracy: float | None = None
    timeout_s: float = 300.0
    calibrated: bool = True
    budget: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LatePolicy:
    """What a late hand-in loses: `per_day` of its points for each day or part of a day after the
    deadline, and all of them after `max_days` days (None: no such cut-off)."""

    per_day: float
    max_days: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.per_day <= 1:
            raise UserError(f"a late policy takes 0 < per_day <= 1 (a fraction of the points), not {self.per_day:g}")
        if self.max_days is not None and self.max_days < 0:
            raise UserError(f"a late policy's max_days is 0 or more, not {self.max_days}")

    @classmethod
    def parse(cls, text: str) -> LatePolicy:
        """`--late-policy`: "10%/day" or "10%/day,max 3" (nothing after 3 days late)."""
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*/\s*day\s*(?:,\s*max\s*(\d+)\s*(?:days?)?\s*)?", text)
        if not match:
            raise UserError(f"--late-policy {text!r}: expected PERCENT%/day[,max DAYS], e.g. '10%/day,max 3'")
        try:
            return cls(float(match[1]) / 100, int(match[2]) if match[2] else None)
        except UserError as mistake:
            raise UserError(f"--late-policy {text!r}: {mistake}") from None

    def penalty(self, days: int) -> float:
        """The fraction of the points lost when handed in `days` started days late."""
        if days <= 0:
            return 0.0
        if self.max_days is not None and days > self.max_days:
            return 1.0
        return min(1.0, round(days * self.per_day, 6))

    def describe(self) -> str:
        cut = _(", nothing after {days} days").format(days=self.max_days) if self.max_days is not None else ""
        return _("{percent:g}% per day late{cut}").format(percent=self.per_day * 100, cut=cut)


@dataclass(frozen=True)
class RubricItem:
    """One line of a written question's rubric: what a TA ticks, and the points it gives (negative: a deduction)."""

    id: str
    points: float
    text: str
    text_vi: str

    @property
    def shown_text(self) -> str:
        return self.text_vi if current() == "vi" else self.text


@dataclass(frozen=True)
class Question:
    """A written question (`[[questions]]` in spec.toml): answered in answers.md under `## <id>`, or in a
    notebook Markdown cell tagged `<id>`; marked by a TA with `grade review` against its rubric."""

    id: str
    points: float
    title: str
    title_vi: str
    rubric: tuple[RubricItem, ...] = ()

    @property
    def shown_title(self) -> str:
        return self.title_vi if current() == "vi" else self.title


@dataclass(frozen=True)
class Spec:
    name: str
    title: str
    title_vi: str
    files: tuple[str, ...]
    limits: Limits
    profiles: dict[str, Profile]
    root: Path
    sandbox_preload: tuple[str, ...] = ()
    grader_preload: tuple[str, ...] = ()  # what the tests import that a warm worker should have imported once
    late: LatePolicy | None = None  # [late]: the penalty of a hand-in after `grade batch --deadline`
    language: str | None = None  # what students read by default (en | vi); None: the locale's
    questions: tuple[Question, ...] = ()  # written answers, marked by hand (grade review)

    @property
    def written_max(self) -> float:
        """The points of the written questions (not in the tests' max_score)."""
        return sum(q.points for q in self.questions)

    @property
    def folder(self) -> Path:
        return self.root / "assignments" / self.name

    @property
    def tests_dir(self) -> Path:
        return self.folder / "tests"

    @property
    def hidden_dir(self) -> Path:
        return self.folder / "hidden"

    @property
    def official_dir(self) -> Path:
        """The checks that need an answer (the grader's copy of an architecture the starter leaves
        blank, an exact answer list): graded by the kit, shown like the public ones, never released."""
        return self.folder / "official"

    @property
    def shown_title(self) -> str:
        """The title in the language spoken now (grader.i18n): `title_vi` in Vietnamese."""
        return self.title_vi if current() == "vi" else self.title

    @property
    def starter_dir(self) -> Path:
        return self.root / "starter" / self.name

    @property
    def reference_dir(self) -> Path:
        return self.root / "reference" / self.name

    @property
    def module_names(self) -> tuple[str, ...]:
        return tuple(Path(f).stem for f in self.files)

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(self.profiles)
            raise UserError(f"{self.name} has no profile '{name}' (known: {known})") from None


def find_root(start: Path | None = None) -> Path:
    """The kit's root: $GRADER_ROOT, else the nearest folder above `start` with assignments/."""
    if os.environ.get(ROOT_ENV):
        root = Path(os.environ[ROOT_ENV]).resolve()
        if not (root / "assignments").is_dir():
            raise UserError(f"${ROOT_ENV} is {root}, which has no assignments/ folder")
        return root
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / "assignments").glob("*/spec.toml")):
            return folder
    raise UserError("no assignments/ folder here or above: run inside the kit, or set $GRADER_ROOT")


def assignment_names(root: Path) -> list[str]:
    return sorted(p.parent.name for p in (root / "assignments").glob("*/spec.toml"))


def did_you_mean(name: str, known: list[str]) -> str:
    """A hint for a mistyped name, ": did you mean assignment2?", from the closest known one; else ""."""
    close = difflib.get_close_matches(name, known, n=1)
    return f": did you mean {close[0]}?" if close else ""


def load_spec(name: str, root: Path | None = None) -> Spec:
    root = root or find_root()
    path = root / "assignments" / name / "spec.toml"
    if not path.is_file():
        known = assignment_names(root)
        raise UserError(f"unknown assignment '{name}'{did_you_mean(name, known)} (known: {', '.join(known) or 'none'})")
    data = read_toml(path)
    known_keys(data, _SPEC_KEYS, str(path))
    for key, kind, said in (("title", str, "a string"), ("files", list, "a list of file names")):
        if not isinstance(data.get(key), kind):
            raise UserError(f"{path}: {key} is missing or not {said}")
    profiles = {pname: _profile(pname, pdata, path) for pname, pdata in _table(data, "profiles", str(path)).items()}
    missing = [p for p in PROFILES if p not in profiles]
    if missing:
        raise UserError(f"{path} defines no profile {', '.join(missing)}")
    return Spec(
        name=name,
        title=data["title"],
        title_vi=data.get("title_vi", data["title"]),
        files=tuple(data["files"]),
        limits=_built(Limits, _table(data, "limits", str(path)), f"{path} [limits]"),
        profiles=profiles,
        root=root,
        sandbox_preload=tuple(data.get("sandbox_preload", ())),
        grader_preload=tuple(data.get("grader_preload", ())),
        late=_late_policy(data.get("late"), path),
        language=_language(data.get("language"), path),
        questions=_questions(data.get("questions", []), path),
    )


_SPEC_KEYS = (
    *("title", "title_vi", "files", "limits", "profiles", "sandbox_preload", "grader_preload"),
    *("late", "language", "questions"),
)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file of the kit (spec.toml, COURSE.toml); one that cannot be read is one line."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as failure:
        raise UserError(f"{path}: cannot be read ({failure})") from None


def known_keys(table: dict[str, Any], known: Iterable[str], where: str) -> None:
    """A key the kit does not read is a mistake (a typo would otherwise be silently ignored)."""
    known = list(known)
    for key in table:
        if key not in known:
            raise UserError(f"{where}: unknown key {key!r}{did_you_mean(key, known)} (known: {', '.join(known)})")


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise UserError(f"{where}: {key} is a table ([{key}])")
    return value


def _built(kind: type, table: dict[str, Any], where: str, **more: Any) -> Any:
    """`kind(**table)` for a dataclass, its keys checked and its values of the types its defaults have."""
    names = [f.name for f in fields(kind) if f.name not in more]
    known_keys(table, names, where)
    built = kind(**table, **more)
    for f in fields(kind):
        default = f.default if f.default is not MISSING else None
        value = getattr(built, f.name)
        if isinstance(default, bool | int | float) and (
            isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, int | float)
        ):
            kind = "true or false" if isinstance(default, bool) else "a number"
            raise UserError(f"{where}: {f.name} = {value!r} is not {kind}")
    return built


def _profile(name: str, table: Any, path: Path) -> Profile:
    where = f"{path} [profiles.{name}]"
    if not isinstance(table, dict):
        raise UserError(f"{where}: a table")
    if "device" not in table:
        raise UserError(f"{where}: device is missing (cpu or cuda)")
    return _built(Profile, table, where, name=name)


def _language(value: Any, path: Path) -> str | None:
    if value is not None and value not in LANGUAGES:
        raise UserError(f"{path}: language = {value!r} is not one of {', '.join(LANGUAGES)}")
    return value


def _late_policy(table: dict[str, Any] | None, path: Path) -> LatePolicy | None:
    """The spec's `[late]` table: `per_day = 0.10` (a fraction of the points), `max_days = 3` (optional)."""
    if table is None:
        return None
    unknown = sorted(set(table) - {"per_day", "max_days"})
    if unknown or "per_day" not in table:
        what = f"unknown key {', '.join(unknown)}" if unknown else "no per_day"
        raise UserError(f"{path} [late]: {what} (it takes per_day = 0.10 and, optionally, max_days = 3)")
    try:
        return LatePolicy(float(table["per_day"]), int(table["max_days"]) if "max_days" in table else None)
    except (TypeError, ValueError):
        raise UserError(f"{path} [late]: per_day and max_days are numbers") from None
    except UserError as mistake:
        raise UserError(f"{path} [late]: {mistake}") from None


_QUESTION_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")


def _questions(tables: Any, path: Path) -> tuple[Question, ...]:
    """The spec's `[[questions]]`: id, points, title (title_vi), and `[[questions.rubric]]` items
    (id, points, text, text_vi). Mistakes are one line naming the file and the question."""
    if not isinstance(tables, list):
        raise UserError(f"{path}: questions is a list of tables ([[questions]])")
    questions = []
    for number, table in enumerate(tables, start=1):
        where = f"{path} [[questions]] #{number}"
        if not isinstance(table, dict):
            raise UserError(f"{where}: a table with id, points and title")
        unknown = sorted(set(table) - {"id", "points", "title", "title_vi", "rubric"})
        missing = [key for key in ("id", "points", "title") if key not in table]
        if unknown or missing:
            raise UserError(
                f"{where}: " + ("unknown key " + ", ".join(unknown) if unknown else "no " + ", ".join(missing))
            )
        qid = str(table["id"])
        if not _QUESTION_ID.match(qid):
            raise UserError(f"{where}: id {qid!r} is a letter then letters, digits, '_', '.', '-' (32 at most)")
        items = []
        for item in table.get("rubric", []):
            extra = sorted(set(item) - {"id", "points", "text", "text_vi"}) if isinstance(item, dict) else ["?"]
            if extra or not {"id", "points", "text"} <= set(item):
                raise UserError(f"{where} (id {qid}): each rubric item has id, points, text and optionally text_vi")
            items.append(
                RubricItem(
                    str(item["id"]), _number(item["points"], where), item["text"], item.get("text_vi", item["text"])
                )
            )
        if len({item.id for item in items}) != len(items):
            raise UserError(f"{where} (id {qid}): two rubric items share an id")
        title = table["title"]
        questions.append(
            Question(qid, _number(table["points"], where), title, table.get("title_vi", title), tuple(items))
        )
    if len({q.id for q in questions}) != len(questions):
        raise UserError(f"{path}: two questions share an id")
    return tuple(questions)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{where}: points = {value!r} is not a number")
    return float(value)


def preloads(specs: Iterable[Spec], which: str = "sandbox_preload") -> tuple[str, ...]:
    """The modules several assignments' spec.toml ask to import once (`sandbox_preload`: in the
    sandbox's zygote; `grader_preload`: in a warm grading process), each once, sorted."""
    return tuple(sorted({name for spec in specs for name in getattr(spec, which)}))


def spec_for(path: Path) -> Spec | None:
    """The spec of the assignment folder that holds `path`, if any (read once while it is unchanged:
    a grading asks for it of every test)."""
    for folder in (path, *path.parents):
        if folder.parent.name == "assignments" and (folder / "spec.toml").is_file():
            return _spec_as_of(folder, (folder / "spec.toml").stat().st_mtime_ns)
    return None


@functools.lru_cache(maxsize=32)
def _spec_as_of(folder: Path, _modified_ns: int) -> Spec:
    return load_spec(folder.name, folder.parent.parent)


def specs_in(args: list[str]) -> list[Spec]:
    """The assignments that pytest's arguments (test paths, node ids) name, each once."""
    found = {}
    for arg in args:
        spec = spec_for(Path(arg.split("::")[0]).resolve())
        if spec is not None:
            found[spec.name] = spec
    return list(found.values())
