"""A scripted loopback HTTP server that the real SDK clients talk to.

Tests fake at the HTTP layer, not the Python layer, so the openai/anthropic SDKs and the LangChain
classes run for real: request serialisation, headers, error mapping, Retry-After handling.

Each request takes the next :class:`Action` from the script (``server.push(...)``); when the
script is empty, the ``responder`` hook decides (default: a schema-valid answer built from the
request's own schema). Every request is recorded (path, headers, JSON body) for assertions.
The server runs in a daemon thread on 127.0.0.1 with an ephemeral port and never touches the
network beyond loopback.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

ActionKind = Literal["reply", "refuse", "content_filter", "error", "hang", "raw"]


@dataclass(frozen=True)
class Action:
    """What the server does with one request. Build with the helper functions below."""

    kind: ActionKind
    content: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    seconds: float = 0.0
    finish_reason: str | None = None
    as_tool: bool | None = None
    usage: tuple[int, int] | None = None
    logprobs: tuple[tuple[str, dict[str, float]], ...] | None = None
    """The answer's tokens, each with its alternatives' log-probabilities (the chosen token's
    own among them); sent, in the provider's wire shape, to a request that asks for them."""


#: one answer token and the log-probabilities of the tokens that could have stood there
TokenLogprobs = tuple[str, dict[str, float]]


def reply(
    content: str | dict[str, Any],
    *,
    as_tool: bool | None = None,
    finish_reason: str | None = None,
    usage: tuple[int, int] | None = None,
    logprobs: list[TokenLogprobs] | None = None,
) -> Action:
    """Answer with ``content`` (a dict is sent as JSON). ``as_tool``: None = as the request asks.
    ``logprobs``: the tokens of ``content`` with their alternatives (default, for a request that
    asks for log-probabilities: each token certain, with no alternative)."""
    text = content if isinstance(content, str) else json.dumps(content)
    return Action(
        "reply", content=text, as_tool=as_tool, finish_reason=finish_reason, usage=usage,
        logprobs=tuple(logprobs) if logprobs is not None else None,
    )  # fmt: skip


def refuse(text: str = "I'm sorry, but I can't help with that.") -> Action:
    """The provider-native refusal (OpenAI ``refusal`` field, Anthropic ``stop_reason``)."""
    return Action("refuse", content=text)


def content_filter() -> Action:
    """OpenAI ``finish_reason: content_filter``."""
    return Action("content_filter")


def error(
    status: int, message: str = "fake error", headers: dict[str, str] | None = None
) -> Action:
    """An HTTP error in the provider's error-body shape (429 with headers for Retry-After)."""
    return Action("error", status=status, content=message, headers=headers or {})


def hang(seconds: float) -> Action:
    """Sleep before answering, so a client with a shorter timeout gives up."""
    return Action("hang", seconds=seconds)


def raw(status: int, body: bytes, headers: dict[str, str] | None = None) -> Action:
    """Send exactly these bytes (a broken body, an HTML error page)."""
    return Action("raw", status=status, body=body, headers=headers or {})


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None


Responder = Callable[[dict[str, Any]], Action]


class FakeServer:
    """Base of the OpenAI and Anthropic fakes: scripting, recording, threading."""

    #: the path the provider's chat endpoint lives at
    chat_path = "/v1/chat"

    def __init__(self, *, responder: Responder | None = None, latency_s: float = 0.0) -> None:
        self.script: deque[Action] = deque()
        self.responder = responder
        self.latency_s = latency_s
        self.requests: list[RecordedRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --------------------------------------------------------------- lifecycle
    def start(self) -> FakeServer:
        handler = _make_handler(self)
        self._httpd = _LoopbackServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    # --------------------------------------------------------------- scripting
    def push(self, *actions: Action) -> None:
        self.script.extend(actions)

    def reset(self) -> None:
        self.script.clear()
        self.requests.clear()

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith(self.chat_path)]

    def next_action(self, body: dict[str, Any]) -> Action:
        try:
            return self.script.popleft()
        except IndexError:
            pass
        if self.responder is not None:
            return self.responder(body)
        return self.default_action(body)

    # --------------------------------------------------------------- per provider
    def default_action(self, body: dict[str, Any]) -> Action:
        raise NotImplementedError

    def render(self, action: Action, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        """Turn an action into (status, headers, body bytes) in the provider's wire format."""
        raise NotImplementedError

    def handle_other(
        self, method: str, path: str, headers: dict[str, str], data: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        """Answer a request to another endpoint (the batch APIs); None: 404."""
        return None

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        """What the chat endpoint answers to ``body`` (a batch line is answered the same way),
        without the latency or hang of a live request."""
        action = self.next_action(body)
        if action.kind == "hang":
            action = self.default_action(body)
        return self.render(action, body)


class _LoopbackServer(ThreadingHTTPServer):
    #: the stdlib's backlog of 5 resets connections when 32 clients connect at once
    request_queue_size = 256


def _make_handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs expect
        disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on loopback

        def log_message(self, format: str, *args: Any) -> None:  # silence stderr
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else b""
            try:
                body = json.loads(data) if data else None
            except json.JSONDecodeError:
                body = None
            server.requests.append(
                RecordedRequest(
                    "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
            )
            if not self.path.endswith(server.chat_path):
                self._other("POST", data)
                return
            action = server.next_action(body or {})
            if server.latency_s:
                time.sleep(server.latency_s)
            if action.kind == "hang":
                time.sleep(action.seconds)
                action = server.default_action(body or {})
            status, headers, payload = server.render(action, body or {})
            self._send(status, headers, payload)

        def do_GET(self) -> None:
            server.requests.append(
                RecordedRequest(
                    "GET", self.path, {k.lower(): v for k, v in self.headers.items()}, None
                )
            )
            self._other("GET", b"")

        def _other(self, method: str, data: bytes) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = server.handle_other(method, self.path.split("?")[0], headers, data)
            if answer is None:
                answer = (404, {"content-type": "application/json"}, b'{"error": "not found"}')
            self._send(*answer)

        def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
            # One write for status line, headers and body: fewer packets, steadier timings.
            lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
            lines += [f"{key}: {value}" for key, value in headers.items()]
            lines.append(f"Content-Length: {len(payload)}")
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            try:
                self.wfile.write(head + payload)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

    return Handler


def json_response(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None):
    """(status, headers, bytes) for a JSON body."""
    return (
        status,
        {"content-type": "application/json", **(headers or {})},
        json.dumps(payload).encode(),
    )
