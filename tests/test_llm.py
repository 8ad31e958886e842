"""End-to-end tests of agentalign.llm over real loopback HTTP servers (no internet, HF_HUB_OFFLINE=1)."""
import json, os, signal, subprocess, sys, textwrap, time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agentalign.llm import (ChatRequest, OpenAIBackend, CachedBackend, ServerThread, run_batch_sync, LLMError, run_sync)
from netutil import free_port

REPO = Path(__file__).resolve().parents[1]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
         {"type": "function", "function": {"name": "get_time", "description": "Current time", "parameters": {"type": "object", "properties": {}}}}]




def completion(content=None, tool_calls=None):
    msg = {"role": "assistant", "content": content}
    if tool_calls: msg["tool_calls"] = tool_calls
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "scripted",
            "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if tool_calls else "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def scripted_app(log: list, key: str | None = None) -> FastAPI:
    """A tiny OpenAI-compatible server: asks for tools, checks the tool results come back, honours a 429 plan."""
    api = FastAPI()
    state = Counter()

    async def completions(request):
        body = await request.json(); log.append((time.monotonic(), body, dict(request.headers)))
        if key is not None and request.headers.get("authorization") != f"Bearer {key}":
            return JSONResponse({"error": {"message": "invalid api key"}}, status_code=401)
        msgs = body["messages"]; last = msgs[-1]
        if last["role"] == "user" and last["content"] == "rate-limit-me":
            state["rl"] += 1
            if state["rl"] == 1: return JSONResponse({"error": {"message": "slow down"}}, status_code=429, headers={"Retry-After": "1"})
            return completion("finally")
        if last["role"] == "user":                     # first turn: call two tools, one without arguments
            assert body.get("tools") and body["tools"][0]["function"]["name"] == "get_weather"
            return completion(None, [{"id": "call_w", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                                     {"id": "call_t", "type": "function", "function": {"name": "get_time", "arguments": ""}}])
        # second turn: the assistant's calls and both tool results must be there
        calls = [m for m in msgs if m["role"] == "assistant" and m.get("tool_calls")]
        results = {m["tool_call_id"]: m["content"] for m in msgs if m["role"] == "tool"}
        assert calls and {c["id"] for c in calls[-1]["tool_calls"]} == set(results), (calls, results)
        return completion(f"weather {results['call_w']} at {results['call_t']}")
    completions.__annotations__["request"] = Request
    api.post("/v1/chat/completions")(completions)
    return api


def test_openai_tool_round_trip():
    log = []
    with ServerThread(scripted_app(log)) as srv:
        b = OpenAIBackend("scripted", base_url=srv.url, api_key_env="AGENTALIGN_TEST_NOKEY")
        conv = [{"role": "user", "content": "Weather in Paris and the time?"}]
        r1 = run_sync(b.chat(ChatRequest(messages=conv, tools=TOOLS)))
        assert [(c.name, c.args()) for c in r1.tool_calls] == [("get_weather", {"city": "Paris"}), ("get_time", {})]
        assert r1.finish_reason == "tool_calls"
        conv += [r1.message()] + [{"role": "tool", "tool_call_id": c.id, "content": {"get_weather": "sunny", "get_time": "noon"}[c.name]} for c in r1.tool_calls]
        r2 = run_sync(b.chat(ChatRequest(messages=conv, tools=TOOLS)))
        assert r2.content == "weather sunny at noon" and not r2.tool_calls
        assert log[1][1]["messages"][1]["tool_calls"][1]["function"] == {"name": "get_time", "arguments": "{}"}


def test_retry_after_is_honoured():
    log = []
    with ServerThread(scripted_app(log)) as srv:
        b = OpenAIBackend("scripted", base_url=srv.url, api_key_env="AGENTALIGN_TEST_NOKEY", backoff_base=0.001)
        t0 = time.monotonic()
        r = run_sync(b.chat(ChatRequest(messages=[{"role": "user", "content": "rate-limit-me"}])))
        assert r.content == "finally" and r.attempts == 2
        assert log[1][0] - log[0][0] >= 0.95                       # waited the server's Retry-After: 1, not the 1 ms backoff


def test_rpm_limit_spaces_requests():
    log = []
    with ServerThread(scripted_app(log)) as srv:
        b = OpenAIBackend("scripted", base_url=srv.url, api_key_env="AGENTALIGN_TEST_NOKEY", rpm=300)   # one start per 0.2 s
        reqs = [ChatRequest(messages=[{"role": "user", "content": f"hi {i}"}], tools=TOOLS, id=str(i)) for i in range(6)]
        res = run_batch_sync(b, reqs, concurrency=6, progress=False)
        assert all(r.ok for r in res)
        starts = sorted(t for t, _, _ in log)
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        # 6 starts need >= 5 intervals of 0.2 s (server-side arrival times jitter with connection set-up)
        assert starts[-1] - starts[0] >= 0.9 and sum(g >= 0.15 for g in gaps) >= 4, gaps


def test_api_key_only_from_env_and_never_leaked(monkeypatch):
    secret = "sk-test-" + "x" * 24
    log = []
    with ServerThread(scripted_app(log, key=secret)) as srv:
        monkeypatch.setenv("AGENTALIGN_TEST_KEY", secret)
        ok = run_sync(OpenAIBackend("scripted", base_url=srv.url, api_key_env="AGENTALIGN_TEST_KEY").chat(
            ChatRequest(messages=[{"role": "user", "content": "rate-limit-me"}], timeout=5)))
        assert ok.content == "finally"                          # the right key works (after one 429)
        monkeypatch.setenv("AGENTALIGN_TEST_KEY", secret + "wrong")
        res = run_batch_sync(OpenAIBackend("scripted", base_url=srv.url, api_key_env="AGENTALIGN_TEST_KEY"),
                             [ChatRequest(messages=[{"role": "user", "content": "q"}], tools=TOOLS, id="a")], progress=False)
        f = res[0].failure
        assert f.reason == "http_error" and "401" in f.detail and secret not in f.model_dump_json()
        assert log[0][2]["authorization"] == f"Bearer {secret}"


KILL_SCRIPT = textwrap.dedent('''
    import sys
    from agentalign.llm import *
    url, cache = sys.argv[1], sys.argv[2]
    b = CachedBackend(OpenAIBackend("slow", base_url=url, api_key_env="AGENTALIGN_TEST_NOKEY"), cache)
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"item-{i}"}], id=str(i)) for i in range(30)]
    run_batch_sync(b, reqs, concurrency=2, progress=False)
''')


def test_killed_run_resumes_without_repeating_successes(tmp_path):
    import asyncio
    hits = Counter()
    api = FastAPI()

    async def completions(request):
        body = await request.json(); item = body["messages"][-1]["content"]; hits[item] += 1
        await asyncio.sleep(0.1)
        return completion(f"answer to {item}")
    completions.__annotations__["request"] = Request
    api.post("/v1/chat/completions")(completions)
    cache = tmp_path / "cache.sqlite"
    with ServerThread(api) as srv:
        p = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, srv.url, str(cache)], cwd=REPO)
        t0 = time.time()
        while sum(hits.values()) < 10 and time.time() - t0 < 60: time.sleep(0.02)
        p.send_signal(signal.SIGKILL); p.wait()
        first = Counter(hits)
        assert 10 <= sum(first.values()) < 30
        b = CachedBackend(OpenAIBackend("slow", base_url=srv.url, api_key_env="AGENTALIGN_TEST_NOKEY"), cache)
        done = len(b.cache)
        assert done >= 8                                           # written as they arrived, before the kill
        reqs = [ChatRequest(messages=[{"role": "user", "content": f"item-{i}"}], id=str(i)) for i in range(30)]
        res = run_batch_sync(b, reqs, concurrency=4, progress=False)
        assert all(r.ok for r in res) and [r.response.content for r in res] == [f"answer to item-{i}" for i in range(30)]
        assert sum(r.response.cached for r in res) == done and b.misses == 30 - done
        assert sum(hits.values()) - sum(first.values()) == 30 - done  # zero repeated successful calls
        assert all(v == 1 for k, v in hits.items() if first[k] == 0)


def test_agentalign_serve_end_to_end(tmp_path):
    """`agentalign serve` as a real subprocess on the embedded model, driven by the OpenAI backend."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AGENTALIGN_TORCH_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-c", "from agentalign.cli import main; main()", "serve", "--port", str(port), "--batch-size", "4"],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        t0 = time.time()
        while True:
            try:
                if httpx.get(url + "/models", timeout=1).status_code == 200: break
            except httpx.HTTPError: pass
            assert p.poll() is None, p.stdout.read()
            assert time.time() - t0 < 180, "server did not come up"
            time.sleep(0.3)
        assert httpx.get(url + "/models").json()["data"][0]["id"] == "embedded"
        b = CachedBackend(OpenAIBackend("embedded", base_url=url, api_key_env="AGENTALIGN_TEST_NOKEY", format_retries=0), tmp_path / "c.sqlite")
        conv = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 C"}]
        reqs = [ChatRequest(messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, id="text"),
                ChatRequest(messages=conv, tools=TOOLS, max_tokens=12, id="tools"),
                ChatRequest(messages=[{"role": "user", "content": "Capital of France?"}], max_tokens=16, id="json",
                            response_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})]
        reqs.append(ChatRequest(messages=conv[:1], tools=TOOLS, tool_choice="required", max_tokens=40, id="call"))
        res = run_batch_sync(b, reqs, concurrency=4, progress=False)
        assert res[0].ok and res[0].response.content and res[0].response.usage["completion_tokens"] > 0
        assert res[1].ok and (res[1].response.content or res[1].response.tool_calls)
        assert res[2].ok or (res[2].failure.reason in ("invalid_json", "schema_mismatch") and res[2].failure.raw)
        if res[2].ok: assert isinstance(res[2].response.parsed["city"], str)
        # a real tool call generated by the embedded model, parsed by the server, returned through the OpenAI API
        assert res[3].ok and res[3].response.finish_reason == "tool_calls", res[3]
        call = res[3].response.tool_calls[0]
        assert call.name in ("get_weather", "get_time") and isinstance(call.args(), dict)
        again = run_batch_sync(b, reqs[:2], progress=False)
        assert all(r.response.cached for r in again)
        bad = httpx.post(url + "/chat/completions", json={"model": "embedded", "messages": [], "stream": True})
        assert bad.status_code == 400 and "stream" in bad.json()["error"]["message"]
    finally:
        p.terminate()
        try: p.wait(timeout=20)
        except subprocess.TimeoutExpired: p.kill(); p.wait()


def test_serve_cli_bad_model_is_one_line():
    r = subprocess.run([sys.executable, "-c", "from agentalign.cli import main; main()", "serve", "--model", "/nonexistent/model"],
                       cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no such local folder" in r.stderr
