"""The one boundary for a hand-in's text: what its code printed, raised or returned, and its names.

A hand-in's text is an adversary's (and often just tqdm's or colorama's colours): it reaches
terminals, Markdown, XML, HTML and spreadsheets. It is cleaned once, where it enters the grader
(grader.sandbox.api for what comes out of a sandbox, grader.submission and grader.batch.store for
names), so that no writer has to know about terminals:

- CSI sequences (colours, cursor moves, `ESC[2J`) are dropped: formatting, never content;
- every other control character (C0, DEL, C1, so ESC and BEL of OSC 0 or OSC 52 too) and lone
  surrogate (a file name's undecodable bytes) is shown as its escape, `\\x1b`, so an attempt stays
  visible and harmless; newlines (a carriage return counts as one) and tabs are kept where the text
  keeps its lines;
- the length is capped.

Cleaning is idempotent: what it writes holds no control character. This module imports nothing
of the grader.
"""

from __future__ import annotations

import re

# ESC [ or the one-character CSI (U+009B), parameters and intermediates, one final byte.
_CSI = re.compile(r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]")
# Lone surrogates too: a file name's undecodable bytes, which no UTF-8 writer can write.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")  # but \t and \n
CUT = "…"


def clean(text: str, limit: int, lines: bool = False, tail: bool = False) -> str:
    """`text` without escape sequences or control characters, at most `limit` characters.

    `lines`: keep newlines and tabs (an output, a message); else the text is one line (a name, a
    reason). `tail`: where the text is cut, keep its end rather than its start (an output's last lines).
    """
    text = _CSI.sub("", text)
    if lines:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = (_LINE_CONTROL if lines else _CONTROL).sub(lambda control: repr(control[0])[1:-1], text)
    if len(text) <= limit:
        return text
    return CUT + text[len(text) - limit + 1 :] if tail else text[: limit - 1] + CUT
