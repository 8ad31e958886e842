"""The test doubles every test shares: one scripted OpenAI-compatible server.

`ScriptedServer` is `agentalign.llm.serve.make_server_app` (the package's own OpenAI-compatible app: request checks,
OpenAI-style errors, `tool_calls`, `response_format`) in front of a `Scripted` backend whose answers come from a
function of the request, behind a thin layer that logs every HTTP request (headers included) and can answer with an
HTTP-level fault instead (a status code, a hang, a broken body). It runs on 127.0.0.1 in a thread; `stop()` and
`start()` take it down and bring it back on the same port (a server that dies mid-stage).

What a server does with a request's capabilities can be scripted too: `drop_tools=True` strips `tools` and
`tool_choice` before the app sees them (a chat template without tool support), `drop_schema=True` strips
`response_format`; `props={...}` answers `GET /props` as llama.cpp's server does (its `chat_template_caps` say what
the chat template supports; without it `/props` is a 404, as on servers other than llama.cpp). The package's
capability probe (`agentalign.llm.openai.probe`, requests marked with `PROBE_MARK`) is answered as a capable model
would answer it, logged in `probes` (not in `completions`), and sees the same faults (called with n = 0). Every reply
reports `usage.prompt_tokens` from the size of what the app saw, so a probe can tell dropped tools from a model that
did not call.

    def test_x(scripted_server):
        srv = scripted_server(lambda req: '{"harmful": true, "rationale": "x"}')
        ... OpenAIBackend("scripted", base_url=srv.url) ...
        assert srv.requests == 3 and not srv.sent_authorization()
"""
from __future__ import annotations
import asyncio, json, socket, threading, time
from collections import Counter
from typing import Any, Callable
import pytest
from agentalign.core import stable_id
from agentalign.llm.base import Backend, ChatRequest, ChatResponse, LLMError, ToolCall
from agentalign.llm.openai import PROBE_MARK


def free_port() -> int:
    "A free TCP port on 127.0.0.1 (for servers started in a subprocess, which must be told their port)."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def call(name: str, args: dict | str | None = None, cid: str | None = None) -> ToolCall:
    "A tool call for a scripted reply."
    a = args if isinstance(args, str) else json.dumps(args or {})
    return ToolCall(id=cid or "call_" + stable_id(name, a, n=12), name=name, arguments=a)


def reply(x: Any, model: str = "scripted") -> ChatResponse:
    """A scripted answer as a `ChatResponse`: a string (content), a list of tool calls, a `(content, [calls])` pair,
    a dict (sent as JSON content), or a `ChatResponse`; `finish_reason` "length" for a `Cut` string."""
    if isinstance(x, ChatResponse): return x
    if isinstance(x, Cut): return ChatResponse(content=str(x), finish_reason="length", model=model)
    if isinstance(x, str): return ChatResponse(content=x, finish_reason="stop", model=model)
    if isinstance(x, dict): return ChatResponse(content=json.dumps(x), finish_reason="stop", model=model)
    if isinstance(x, tuple): content, calls = x
    else: content, calls = None, x
    calls = [c if isinstance(c, ToolCall) else call(*c) for c in calls]
    return ChatResponse(content=content, tool_calls=calls, finish_reason="tool_calls" if calls else "stop", model=model)


class Cut(str):
    "A scripted reply that stopped at `max_tokens` (finish_reason length)."


def is_probe(messages: Any) -> bool:
    "Whether a request (its messages) is the package's capability probe."
    return isinstance(messages, list) and bool(messages) and isinstance(messages[0], dict) and str(messages[0].get("content") or "").startswith(PROBE_MARK)


def probe_answer(req: ChatRequest) -> Any:
    "What a capable model answers to a probe request: the call it asks for, the JSON it asks for, or text."
    if req.tools: return [call(req.tools[0]["function"]["name"], {"ok": True})]
    if req.response_schema is not None: return {"ok": True}
    return "ok"


class Scripted(Backend):
    "A backend answering each request with `script(req)` (see `reply` for what it may return); raises what the script raises."
    kind = "scripted"
    def __init__(self, script: Callable[[ChatRequest], Any], model: str = "scripted"):
        self.script, self.model = script, model
        self.seen: list[ChatRequest] = []
    async def chat(self, req: ChatRequest) -> ChatResponse:
        if is_probe(req.messages): out = probe_answer(req)
        else:
            self.seen.append(req)
            out = self.script(req)
            if asyncio.iscoroutine(out): out = await out
        r = reply(out, self.model)
        if r.usage: return r
        n = len(json.dumps([req.messages, req.tools])) // 4
        return r.model_copy(update={"usage": {"prompt_tokens": n, "completion_tokens": 1, "total_tokens": n + 1}})


class Fault:
    "An HTTP-level answer instead of the app's: `Fault.status(500)`, `Fault.hang(5)`, `Fault.broken()`."
    def __init__(self, kind: str, status: int = 500, message: str = "scripted fault", seconds: float = 0.0, headers: dict | None = None):
        self.kind, self.status, self.message, self.seconds, self.headers = kind, status, message, seconds, headers or {}
    @classmethod
    def status(cls, code: int, message: str = "scripted fault", headers: dict | None = None): return cls("status", code, message, headers=headers)
    @classmethod
    def hang(cls, seconds: float): return cls("hang", seconds=seconds)
    @classmethod
    def broken(cls): return cls("broken")


class ScriptedServer:
    """`make_server_app(Scripted(script))` on 127.0.0.1 with a request log and HTTP faults.

    `script(req)` answers a checked `ChatRequest`; `fault(body, headers, n)` (n: the request's number, from 1) may
    return a `Fault` to answer instead. `log` has one entry per HTTP request: path, headers (lower-case names), JSON
    body, status."""
    def __init__(self, script: Callable[[ChatRequest], Any] | None = None, fault: Callable[[dict, dict, int], Fault | None] | None = None,
                 model: str = "scripted", port: int = 0, drop_tools: bool = False, drop_schema: bool = False, props: dict | None = None):
        from agentalign.llm.serve import make_server_app
        self.backend = Scripted(script or (lambda req: "ok"), model)
        self.fault, self.log, self.probe_log, self.port, self.props = fault, [], [], port, props
        self.drop = (("tools", "tool_choice") if drop_tools else ()) + (("response_format",) if drop_schema else ())
        self._lock = threading.Lock()
        inner = make_server_app(self.backend, model)
        self.app = self._wrap(inner)
        self._thread = None

    def _wrap(self, inner):
        from starlette.responses import JSONResponse, Response
        server = self
        async def asgi(scope, receive, send):
            if scope["type"] != "http": return await inner(scope, receive, send)
            chunks, more = [], True
            while more:
                msg = await receive(); chunks.append(msg.get("body", b"")); more = msg.get("more_body", False)
            raw = b"".join(chunks)
            try: body = json.loads(raw or b"{}")
            except ValueError: body = None
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            probe = isinstance(body, dict) and is_probe(body.get("messages"))
            if isinstance(body, dict) and server.drop and any(k in body for k in server.drop):
                body = {k: v for k, v in body.items() if k not in server.drop}; raw = json.dumps(body).encode()
            with server._lock:
                entry = {"path": scope["path"], "headers": headers, "body": body, "status": None, "t": time.time()}
                (server.probe_log if probe else server.log).append(entry); n = 0 if probe else len(server.log)
            if scope["path"] == "/props" and server.props is not None:
                entry["status"] = 200; return await JSONResponse(server.props)(scope, receive, send)
            f = server.fault(body, headers, n) if server.fault and scope["path"].endswith("/chat/completions") else None
            if f is not None:
                if f.kind == "hang":
                    await asyncio.sleep(f.seconds); resp = JSONResponse({"error": {"message": "late"}}, status_code=504)
                elif f.kind == "broken": resp = Response('{"id": "x", "choices": [', media_type="application/json")
                else: resp = JSONResponse({"error": {"message": f.message, "type": "scripted", "code": None}}, status_code=f.status, headers=f.headers)
                entry["status"] = resp.status_code
                return await resp(scope, receive, send)
            sent = False
            async def replay():
                nonlocal sent
                if sent: return {"type": "http.disconnect"}
                sent = True; return {"type": "http.request", "body": raw, "more_body": False}
            async def track(message):
                if message["type"] == "http.response.start": entry["status"] = message["status"]
                await send(message)
            return await inner(scope, replay, track)
        return asgi

    # ---------------------------------------------------------------- life cycle
    def start(self) -> "ScriptedServer":
        from agentalign.llm.serve import ServerThread
        self._thread = ServerThread(self.app, port=self.port).__enter__()
        self.port = self._thread.port
        from agentalign.llm import factory                 # a new server on a port used before: probe it anew
        for k in [k for k in factory._PROBED if k[0] == self.url]: del factory._PROBED[k]
        return self

    def stop(self) -> None:
        if self._thread is not None: self._thread.__exit__(None, None, None); self._thread = None

    def __enter__(self): return self.start()
    def __exit__(self, *exc): self.stop()

    # ---------------------------------------------------------------- what it saw
    @property
    def url(self) -> str: return f"http://127.0.0.1:{self.port}/v1"
    @property
    def completions(self) -> list[dict]: return [e for e in self.log if e["path"].endswith("/chat/completions")]
    @property
    def requests(self) -> int: return len(self.completions)
    def succeeded(self) -> int: return sum(e["status"] == 200 for e in self.completions)
    @property
    def probes(self) -> list[dict]: return [e for e in self.probe_log if e["path"].endswith("/chat/completions")]
    def sent_authorization(self) -> list[str]: return [e["headers"]["authorization"] for e in self.probe_log + self.log if "authorization" in e["headers"]]
    def hits(self, key: Callable[[dict], Any]) -> Counter: return Counter(key(e["body"]) for e in self.completions)
    def settle(self, quiet: float = 0.3, limit: float = 60.0) -> int:
        "Wait until every request received so far is answered and none came for `quiet` seconds (a killed client's last ones); the requests then."
        n, still = -1, 0.0
        for _ in range(int(limit / 0.05)):
            busy = any(e["status"] is None for e in self.completions)
            still = 0.0 if busy or self.requests != n else still + 0.05
            n = self.requests
            if still >= quiet: break
            time.sleep(0.05)
        return self.requests


@pytest.fixture
def scripted_server():
    "Start scripted servers: `scripted_server(script, fault=None, model='scripted')`; all are stopped after the test."
    servers: list[ScriptedServer] = []
    def make(script=None, fault=None, model: str = "scripted", port: int = 0, **kw) -> ScriptedServer:
        s = ScriptedServer(script, fault, model, port, **kw).start(); servers.append(s); return s
    yield make
    for s in servers: s.stop()
