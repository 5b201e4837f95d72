"""A grading's seed: the same hand-in gets the same seed, which no student can know in advance.

    seed = HMAC-SHA256(the course's secret, assignment name + digest of the hand-in's modules)

The digest is that of the modules as the grader materializes them (grader.submission), so the same
hand-in in a folder, a zip or downloaded again gets the same seed, hence the same grade, on every
regrade, on every executor; the language of the report is no part of it. The secret is made once,
with `secrets`, in the kit's `.grade/secret`: never released (a student bundle makes its own the
first time it grades), never in a sandbox. Losing it changes the inputs drawn, not the grades of
correct code. `--seed` overrides it all.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

from grader.errors import UserError
from grader.options import GradingOptions
from grader.spec import Spec

SECRET_FILE = Path(".grade") / "secret"  # under the kit's root; .gitignore keeps it out of the repository
SEED_BITS = 62  # as a seed drawn at random was: a plain int everywhere it goes


def course_secret(root: Path) -> bytes:
    """The course's secret, made at the first grading of this kit (readable by its owner only)."""
    path = root / SECRET_FILE
    try:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as draft:
                draft.write(secrets.token_hex(32))
            try:
                os.link(draft.name, path)  # all or nothing: of two gradings making it at once, one wins
            except FileExistsError:
                pass
            finally:
                os.unlink(draft.name)
        secret = path.read_text().strip()
    except OSError as failure:
        raise UserError(f"cannot keep the course's secret in {path} ({failure.strerror}): give --seed N") from None
    if not secret:
        raise UserError(f"{path} is empty: delete it (a new secret is made) or grade with --seed N")
    return secret.encode()


def hand_in_seed(spec: Spec, digest: str) -> int:
    """The seed of a hand-in of `spec` whose modules have `digest` (grader.submission.folder_digest)."""
    mac = hmac.new(course_secret(spec.root), f"{spec.name}\0{digest}".encode(), hashlib.sha256).digest()
    return int.from_bytes(mac[:8], "little") >> (64 - SEED_BITS)


def seeded(options: GradingOptions, spec: Spec, digest: str) -> GradingOptions:
    """`options` with the hand-in's own seed, unless one was given (--seed, calibration)."""
    return options if options.seed is not None else options.with_(seed=hand_in_seed(spec, digest))
