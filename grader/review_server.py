"""`grade review`'s web server: 127.0.0.1 only, every path behind a random token.

    GET  /<token>/            the first question's page
    GET  /<token>/q/<id>      a question's page
    POST /<token>/mark        a mark, as JSON: {student, question, rubric: [ids], points, comment}

Anything else, and anything without the token (compared in constant time) or for another host
(DNS rebinding), is 404. A save must also carry the token in an X-Review-Token header, which no
other site's page can send without the preflight this server never answers, and an Origin, if
any, of this server. Every response forbids what the page does not need (Content-Security-Policy:
its own script and style under a nonce of the response, requests to itself only, no frame).
"""

from __future__ import annotations

import hmac
import json
import secrets
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from grader import review_page
from grader.errors import UserError
from grader.review import Refused, Review

HOST = "127.0.0.1"
BODY_BYTES = 64 * 1024  # a mark is a few hundred bytes; a comment at most COMMENT_CHARS


def policy(nonce: str) -> str:
    """The Content-Security-Policy of a response whose script and style carry `nonce`."""
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


class ReviewServer(ThreadingHTTPServer):
    """Serves one Review on HOST:`port` (0: a free port) at `address`, its token in every path."""

    daemon_threads = True  # a browser's idle connection never holds the exit; a save in progress does (serve)

    def __init__(self, review: Review, port: int = 0):
        self.review = review
        self.token = secrets.token_urlsafe(24)
        super().__init__((HOST, port), ReviewHandler)
        self.hosts = {f"{HOST}:{self.server_port}", f"localhost:{self.server_port}"}

    @property
    def address(self) -> str:
        return f"http://{HOST}:{self.server_port}/{self.token}/"


class ReviewHandler(BaseHTTPRequestHandler):
    server: ReviewServer
    server_version = "grade-review"
    sys_version = ""
    nonce = ""

    def do_GET(self) -> None:
        route = self._route()
        review = self.server.review
        if route == "":
            question = review.questions[0]
        elif route is not None and route.startswith("q/"):
            question = review.question(unquote(route[2:]))
        else:
            question = None
        if question is None:
            return self._not_found()
        self.nonce = secrets.token_urlsafe(18)
        try:
            text = review_page.page(review, question, self.server.token, self.nonce)
        except UserError as broken:  # manual.csv edited by hand into something unreadable
            return self._reply(500, "text/plain; charset=utf-8", str(broken).encode())
        self._reply(200, "text/html; charset=utf-8", text.encode())

    def do_POST(self) -> None:
        if self._route() != "mark":
            return self._not_found()
        refusal = self._refusal()
        if refusal:
            return self._json(403, {"error": refusal})
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or not 0 < int(length) <= BODY_BYTES:
            return self._json(413, {"error": f"a mark is 1 to {BODY_BYTES} bytes"})
        try:
            request = json.loads(self.rfile.read(int(length)))
            if not isinstance(request, dict):
                raise Refused("a mark is a JSON object")
            answer = self._save(request)
        except (Refused, UnicodeDecodeError, json.JSONDecodeError) as refused:
            return self._json(400, {"error": str(refused)})
        except (UserError, OSError) as failure:  # manual.csv unreadable, or not writable
            return self._json(500, {"error": str(failure)})
        self._json(200, answer)

    def _save(self, request: dict[str, Any]) -> dict[str, Any]:
        """Save the mark of the request; what the page shows of it: status, points, the question's count."""
        review = self.server.review
        student, question_id = str(request.get("student")), str(request.get("question"))
        mark = review.save(
            student, question_id, request.get("rubric", []), request.get("points"), request.get("comment", "")
        )
        question = review.question(question_id)
        assert question is not None  # save refused any other
        progress = review.progress(question, review.marks())
        return {
            "status": review_page.saved_line(mark, question),
            "points": f"{mark.points:g}" if mark else "",
            "count": review_page.count_line(progress),
            "tab": review_page.tab_label(question, progress),
        }

    def _route(self) -> str | None:
        """The path after the token (None: no token, a wrong one, or another host)."""
        if self.headers.get("Host") not in self.server.hosts:
            return None
        parts = urlsplit(self.path).path.split("/", 2)
        if len(parts) < 2 or parts[0] or not hmac.compare_digest(parts[1].encode(), self.server.token.encode()):
            return None
        return parts[2] if len(parts) == 3 else ""

    def _refusal(self) -> str:
        """Why a save does not come from this server's page ("" if it does)."""
        sent = self.headers.get("X-Review-Token", "")
        if not hmac.compare_digest(sent.encode(), self.server.token.encode()):
            return "no X-Review-Token header of this review"
        origin = self.headers.get("Origin")
        if origin is not None and origin.removeprefix("http://") not in self.server.hosts:
            return "another origin"
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            return "a mark is sent as application/json"
        return ""

    def _not_found(self) -> None:
        self._reply(404, "text/plain; charset=utf-8", b"not found\n")

    def _json(self, status: int, document: dict[str, Any]) -> None:
        self._reply(status, "application/json", json.dumps(document).encode())

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def end_headers(self) -> None:
        """Every response, errors of http.server's own included, with the page's security headers."""
        self.send_header("Content-Security-Policy", policy(self.nonce or secrets.token_urlsafe(18)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the terminal shows the address, not each request (and its token)."""


def serve(review: Review, port: int = 0) -> None:
    """Serve `review` until Ctrl-C: its address on one line first; at the end, a save in progress is finished."""
    try:
        server = ReviewServer(review, port)
    except OSError as failure:
        raise UserError(f"--port {port}: cannot listen on {HOST} ({failure.strerror})") from None
    for line in review.left_out:
        print(line, file=sys.stderr)
    print(f"review {review.spec.name} at {server.address} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        with review.lock:  # a save in progress ends before the process does
            print(f"stopped: the marks are in {review.manual_csv}", flush=True)
