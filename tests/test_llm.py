"""End-to-end tests of the LLM layer over real loopback HTTP servers (no internet, HF_HUB_OFFLINE=1).

The servers are the scripted OpenAI-compatible server of `conftest.py`. No test here asserts how long something
took: the waits the `openai` client makes before a retry are read from the server's own arrival times (a lower bound
the client must respect), the RPM limiter's spacing from the event loop's clock at each release (a lower bound the
limiter guarantees), and timing numbers live in benchmarks/llm_throughput.py.
"""
import asyncio, json, os, signal, subprocess, sys, textwrap, time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import httpx
import pytest

from agentalign.llm.base import ChatRequest, CachedBackend, run_batch_sync, run_sync
from agentalign.llm.openai import OpenAIBackend
from agentalign.llm.factory import llm_config, make_backend
from conftest import Fault, call, free_port

REPO = Path(__file__).resolve().parents[1]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
         {"type": "function", "function": {"name": "get_time", "description": "Current time", "parameters": {"type": "object", "properties": {}}}}]
SECRET = "sk-test-" + "x7" * 16
CLI = [sys.executable, "-c", "from agentalign.cli import main; main()"]
INSTRUCTIONS = {"instructions": ["Please check the weather forecast for Paris tomorrow and tell me whether I need an umbrella."]}


def last_user(body: dict) -> str: return body["messages"][-1]["content"]


def weather_script(req):
    "First turn: call two tools (one without arguments); second turn: answer from both tool results."
    if req.messages[-1]["role"] == "user":
        return [call("get_weather", {"city": "Paris"}, "call_w"), call("get_time", "", "call_t")]
    results = {m["tool_call_id"]: m["content"] for m in req.messages if m["role"] == "tool"}
    return f"weather {results.get('call_w')} at {results.get('call_t')}"


def first_hit_429(headers: dict):
    "A fault plan: the first request with a given last user message gets a 429 with `headers`, later ones pass."
    seen = Counter()
    def fault(body, hdrs, n):
        seen[last_user(body)] += 1
        return Fault.status(429, "slow down", headers=headers) if seen[last_user(body)] == 1 and last_user(body).startswith("rate-limit-me") else None
    return fault


def test_openai_tool_round_trip(scripted_server):
    srv = scripted_server(weather_script)
    b = OpenAIBackend("scripted", base_url=srv.url)
    conv = [{"role": "user", "content": "Weather in Paris and the time?"}]
    r1 = run_sync(b.chat(ChatRequest(messages=conv, tools=TOOLS)))
    assert [(c.name, c.args()) for c in r1.tool_calls] == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert r1.finish_reason == "tool_calls"
    conv += [r1.message()] + [{"role": "tool", "tool_call_id": c.id, "content": {"get_weather": "sunny", "get_time": "noon"}[c.name]} for c in r1.tool_calls]
    r2 = run_sync(b.chat(ChatRequest(messages=conv, tools=TOOLS)))
    assert r2.content == "weather sunny at noon" and not r2.tool_calls
    sent = srv.completions[1]["body"]["messages"]                        # what the second request carried
    assert sent[1]["tool_calls"][1]["function"] == {"name": "get_time", "arguments": "{}"}
    assert [m["tool_call_id"] for m in sent if m["role"] == "tool"] == ["call_w", "call_t"]
    assert srv.backend.seen[0].tools == TOOLS


@pytest.mark.parametrize("header,wait", [({"Retry-After": "2"}, 2.0), ({"retry-after-ms": "1500"}, 1.5)])
def test_retry_after_and_retry_after_ms_are_honoured(scripted_server, header, wait):
    """The client waits what the server asks (Retry-After: 2 / retry-after-ms: 1500) before it retries: the retry
    arrives at least that long after the 429 was asked for. Its own first backoff is at most 0.5 s, so a shorter gap
    would mean the header was ignored."""
    srv = scripted_server(lambda req: "finally", fault=first_hit_429(header))
    r = run_sync(OpenAIBackend("scripted", base_url=srv.url).chat(ChatRequest(messages=[{"role": "user", "content": "rate-limit-me"}])))
    assert r.content == "finally" and r.attempts == 2
    assert [e["status"] for e in srv.completions] == [429, 200]
    gap = srv.completions[1]["t"] - srv.completions[0]["t"]
    assert gap >= wait, gap


def test_rpm_limit_spaces_every_attempt(scripted_server, monkeypatch):
    "rpm=300: every HTTP attempt (retries included) passes the limiter, released at least 0.2 s after the previous one."
    import aiolimiter
    released, original = [], aiolimiter.AsyncLimiter.acquire
    async def acquire(self, amount=1):
        await original(self, amount)
        released.append(asyncio.get_running_loop().time())     # same step as the release: no scheduling delay in between
    monkeypatch.setattr(aiolimiter.AsyncLimiter, "acquire", acquire)
    srv = scripted_server(lambda req: "hello", fault=first_hit_429({"retry-after-ms": "250"}))
    b = OpenAIBackend("scripted", base_url=srv.url, rpm=300)
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"hi {i}"}], id=str(i)) for i in range(5)]
    reqs.append(ChatRequest(messages=[{"role": "user", "content": "rate-limit-me-ms"}], id="rl"))   # one 429, then a retry
    res = run_batch_sync(b, reqs, concurrency=6, progress=False)
    assert all(r.ok for r in res), [r.failure for r in res if not r.ok]
    assert len(released) == srv.requests == b.requests_sent == 7 and srv.succeeded() == 6   # 6 requests + 1 retry, each limited
    gaps = [b2 - b1 for b1, b2 in zip(released, released[1:])]
    assert min(gaps) >= 0.2 - 1e-6, gaps


def test_default_openai_key_is_not_sent_to_other_hosts(scripted_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("AGENTALIGN_TEST_KEY", SECRET + "-other")
    srv = scripted_server(lambda req: INSTRUCTIONS)
    q = [ChatRequest(messages=[{"role": "user", "content": "hi"}])]
    for cfg, expected in [(llm_config("openai", "m", srv.url), None),                                   # default: no key
                          (llm_config("openai", "m", srv.url, "AGENTALIGN_TEST_KEY"), f"Bearer {SECRET}-other"),
                          (llm_config("openai", "m", srv.url, "OPENAI_API_KEY"), f"Bearer {SECRET}"),   # the opt-in
                          (llm_config("openai", "m", srv.url, "AGENTALIGN_TEST_UNSET"), None)]:
        before = srv.requests
        assert all(r.ok for r in run_batch_sync(make_backend(cfg), q, progress=False))
        assert [e["headers"].get("authorization") for e in srv.completions[before:]] == [expected], cfg
    assert srv.requests == 4


def _instructions(run: Path, url: str, *extra, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "instructions", "--out", str(run), "--limit", "1", "--counts", "1:0:0", "--no-figures",
                           "--backend", "openai", "--model", "scripted", "--base-url", url, *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def _everything_written(run: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in run.rglob("*") if p.is_file() and p.suffix != ".sqlite")


def test_stage_cli_never_sends_default_key_to_a_custom_base_url(tmp_path, scripted_server):
    "A stage command with OPENAI_API_KEY in its environment still sends no key to another host unless asked."
    srv = scripted_server(lambda req: INSTRUCTIONS)
    r = _instructions(tmp_path / "run", srv.url, env={"OPENAI_API_KEY": SECRET})
    assert srv.requests >= 1 and not srv.sent_authorization(), (srv.requests, r.stderr[-2000:])
    assert SECRET not in r.stdout + r.stderr + _everything_written(tmp_path / "run")


def test_401_quoting_the_key_never_reaches_any_file(tmp_path, scripted_server):
    message = f"Incorrect API key provided: {SECRET}. You can find your key at https://example.org."
    srv = scripted_server(lambda req: INSTRUCTIONS, fault=lambda body, headers, n: Fault.status(401, message))
    r = _instructions(tmp_path / "run", srv.url, "--api-key-env", "AGENTALIGN_TEST_KEY", env={"AGENTALIGN_TEST_KEY": SECRET})
    # the capability probe met the 401 before the stage sent anything: one error line, the named key went to that host only
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: instruction writer at http://127.0.0.1:"), r.stderr[-2000:]
    assert "the endpoint refused the request (http_error: HTTP 401: Incorrect API key provided: ***" in r.stderr
    assert len(srv.probes) == 1 and srv.requests == 0                  # one probe (a 401 is not retried), no stage request
    assert set(srv.sent_authorization()) == {f"Bearer {SECRET}"}
    assert SECRET not in _everything_written(tmp_path / "run") + r.stdout + r.stderr


def test_key_inside_the_base_url_never_reaches_any_file(tmp_path, scripted_server):
    url_key = "sk-in-url-" + "q3" * 12
    srv = scripted_server(lambda req: INSTRUCTIONS)
    r = _instructions(tmp_path / "run", srv.url.replace("http://", f"http://agent:{url_key}@"))
    assert srv.succeeded() >= 1, r.stderr[-2000:]
    run_json = (tmp_path / "run" / "run.json").read_text()
    assert "http://***@127.0.0.1" in run_json and url_key not in run_json
    assert url_key not in _everything_written(tmp_path / "run") + r.stdout + r.stderr


KILL_SCRIPT = textwrap.dedent('''
    import sys
    from agentalign.llm.base import CachedBackend, ChatRequest, run_batch_sync
    from agentalign.llm.openai import OpenAIBackend
    url, cache = sys.argv[1], sys.argv[2]
    b = CachedBackend(OpenAIBackend("slow", base_url=url), cache)
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"item-{i}"}], id=str(i)) for i in range(30)]
    run_batch_sync(b, reqs, concurrency=2, progress=False)
''')


def test_killed_run_resumes_without_repeating_successes(tmp_path, scripted_server):
    async def slow(req):
        await asyncio.sleep(0.1)
        return f"answer to {req.messages[-1]['content']}"
    srv = scripted_server(slow, model="slow")
    hits = lambda: srv.hits(last_user)                                 # requests that arrived, per item
    cache = tmp_path / "cache.sqlite"
    p = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, srv.url, str(cache)], cwd=REPO)
    deadline = time.monotonic() + 120                              # a guard against a hang, not a timing assertion
    while srv.requests < 10 and time.monotonic() < deadline: time.sleep(0.02)
    p.send_signal(signal.SIGKILL); p.wait()
    first = hits()
    assert 10 <= sum(first.values()) < 30
    b = CachedBackend(OpenAIBackend("slow", base_url=srv.url), cache)
    done = len(b.cache)
    assert done >= 8                                           # written as they arrived, before the kill
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"item-{i}"}], id=str(i)) for i in range(30)]
    res = run_batch_sync(b, reqs, concurrency=4, progress=False)
    assert all(r.ok for r in res) and [r.response.content for r in res] == [f"answer to item-{i}" for i in range(30)]
    assert sum(r.response.cached for r in res) == done and b.misses == 30 - done
    assert sum(hits().values()) - sum(first.values()) == 30 - done  # zero repeated successful calls
    assert all(v == 1 for k, v in hits().items() if first[k] == 0)


def test_agentalign_serve_end_to_end(tmp_path):
    """`agentalign serve` as a real subprocess on the embedded model, driven by the OpenAI backend and raw HTTP."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AGENTALIGN_TORCH_THREADS": "1"}
    p = subprocess.Popen([*CLI, "serve", "--port", str(port), "--batch-size", "4", "--max-tokens-cap", "64"],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300                          # a guard against a hang, not a timing assertion
        while True:
            try:
                if httpx.get(url + "/models", timeout=1).status_code == 200: break
            except httpx.HTTPError: pass
            assert p.poll() is None, p.stdout.read()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.3)
        assert httpx.get(url + "/models").json()["data"][0]["id"] == "embedded"
        b = CachedBackend(OpenAIBackend("embedded", base_url=url, format_retries=0), tmp_path / "c.sqlite")
        conv = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 C"}]
        schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}}, "required": ["city"]}
        reqs = [ChatRequest(messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, id="text"),
                ChatRequest(messages=conv, tools=TOOLS, max_tokens=12, id="tools"),
                ChatRequest(messages=[{"role": "user", "content": "Capital of France?"}], max_tokens=24, id="json", response_schema=schema),
                ChatRequest(messages=conv[:1], tools=TOOLS, tool_choice="required", max_tokens=40, id="call")]

        async def with_bad_neighbours():
            "The four valid requests, concurrently with invalid ones that must fail alone."
            async with httpx.AsyncClient(timeout=300) as c:
                bad = [c.post(url + "/chat/completions", json={"messages": [{"role": "user", "content": "x"}], **kw})
                       for kw in ({"seed": 2**70}, {"max_tokens": 100000}, {"response_format": "json"}, {"temperature": -1},
                                  {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]})]
                from agentalign.llm.base import run_batch
                out = await asyncio.gather(run_batch(b, reqs, concurrency=4, progress=False), *bad)
                await b.aclose()
                return out[0], out[1:]
        res, bad = run_sync(with_bad_neighbours())
        assert [r.status_code for r in bad] == [400] * 5 and [r.json()["error"]["param"] for r in bad] == \
            ["seed", "max_tokens", "response_format", "temperature", "tools[0].function.parameters"]
        assert all(r.ok for r in res), [r.failure for r in res if not r.ok]
        assert res[0].response.content and res[0].response.usage["completion_tokens"] > 0
        assert res[1].response.content or res[1].response.tool_calls
        assert set(res[2].response.parsed) == {"city"} and isinstance(res[2].response.parsed["city"], str)   # the grammar holds the schema
        # a real tool call generated by the embedded model, parsed by the server, returned through the OpenAI API
        assert res[3].response.finish_reason == "tool_calls", res[3]
        call = res[3].response.tool_calls[0]
        assert (call.name == "get_weather" and set(call.args()) == {"city"}) or (call.name, call.args()) == ("get_time", {}), call
        again = run_batch_sync(b, reqs[:2], progress=False)
        assert all(r.response.cached for r in again)
        capped = httpx.post(url + "/chat/completions", json={"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 5000}, timeout=300).json()
        assert capped["usage"]["completion_tokens"] <= 64                           # --max-tokens-cap
        bad = httpx.post(url + "/chat/completions", json={"model": "embedded", "messages": [], "stream": True})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "stream"
    finally:
        p.terminate()
        try: p.wait(timeout=20)
        except subprocess.TimeoutExpired: p.kill(); p.wait()


def test_serve_cli_bad_model_is_one_line():
    r = subprocess.run([*CLI, "serve", "--model", "/nonexistent/model"],
                       cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no such local folder" in r.stderr


@pytest.mark.parametrize("args,msg", [(["--port", "99999"], "--port must be between 1 and 65535, got 99999"),
                                      (["--max-tokens-cap", "0"], "--max-tokens-cap must be at least 1, got 0")])
def test_serve_cli_bad_option_is_one_line_before_the_model(args, msg):
    "With a model that does not exist, the error is about the option: it was checked before any model was touched."
    r = subprocess.run([*CLI, "serve", "--model", "/nonexistent/model", *args],
                       cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == f"error: {msg}", r.stderr


def test_serve_cli_port_in_use_is_one_line_before_the_model():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); s.listen(); port = s.getsockname()[1]
        r = subprocess.run([*CLI, "serve", "--model", "/nonexistent/model", "--port", str(port)],
                           cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}") and r.stderr.strip().count("\n") == 0, r.stderr


def test_common_llm_options_are_one_line(tmp_path):
    "Bad values of the common LLM options, in a real stage command: one `error:` line each, not a traceback."
    for args, line in [(["--base-url", "ftp://h/v1"], "error: command line: writer.base_url: --base-url must be an http(s) URL such as http://127.0.0.1:8000/v1, got 'ftp://h/v1'"),
                       (["--base-url", "http://h/v1", "--rpm", "-1"], "error: command line: writer.rpm: Input should be greater than 0"),
                       (["--base-url", "http://h/v1", "--api-key-env", "MY KEY"], "error: command line: writer.api_key_env: not an environment variable name: 'MY KEY'"),
                       (["--backend", "anthropic"], "error: command line: writer.backend: Input should be 'local' or 'openai'")]:
        r = subprocess.run([*CLI, "instructions", "--out", str(tmp_path / "r"), "--limit", "1", "--no-figures", *(["--backend", "openai"] if args[0] != "--backend" else []), *args],
                           cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
        assert r.returncode == 2 and r.stderr.strip() == line, (args, r.stderr[-1500:])   # one line naming the stage setting
