"""Agent loop against real LLM backends: an OpenAI-compatible loopback server with scripted replies (through the real
`OpenAIBackend` and its HTTP client), and the embedded SmolLM2-135M model.

The scripted server is a FastAPI app on 127.0.0.1 (free port, started and stopped inside the test). It answers the
conversation by its length: first a `search_google` call, then a `send_gmail` call, then a final answer; it records
every request so the test can check that the tool results were fed back with the right `tool_call_id`s."""
import json, os
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from agentalign.agent import AgentTask, AgentConfig, run_episode_sync, run_episodes_sync, Trajectory
from agentalign.llm.openai import OpenAIBackend
from agentalign.llm.serve import ServerThread
from agentalign.llm.factory import make_backend
from agentalign.llm.base import LLMConfig


def _completion(msg: dict, finish: str) -> dict:
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "scripted",
            "choices": [{"index": 0, "message": msg, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}

def _call(cid: str, name: str, args) -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}

def scripted_app(script: list, seen: list):
    "FastAPI app answering the n-th request of a conversation (n = assistant turns so far) with script[n]."
    from fastapi import FastAPI, Request
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        body = await request.json()
        seen.append(body)
        n = sum(m["role"] == "assistant" for m in body["messages"])
        reply = script[min(n, len(script) - 1)]
        if isinstance(reply, str): return _completion({"role": "assistant", "content": reply}, "stop")
        return _completion({"role": "assistant", "content": None, "tool_calls": reply}, "tool_calls")
    return app

TASK = AgentTask(id="tides", instruction="Find the Brighton tide tables and email them to anna@example.com.",
                 tools=["search_google", "send_gmail"])


def test_loopback_server_two_tools_in_sequence():
    seen = []
    script = [[_call("call_a", "search_google", {"query": "Brighton tide tables", "num_results": 3})],
              [_call("call_b", "send_gmail", {"sender": "me@gmail.com", "to": ["anna@example.com"], "subject": "Tides", "body": "Links inside"})],
              "I found the tide tables and emailed them to Anna."]
    with ServerThread(scripted_app(script, seen)) as srv:
        backend = OpenAIBackend("scripted", base_url=srv.url, api_key_env="AGENTALIGN_TEST_NO_KEY")
        tr = run_episode_sync(backend, TASK, AgentConfig(seed=1, n_distractors=2))
    # both calls executed, in order, successfully
    assert [s.tool for s in tr.steps] == ["search_google", "send_gmail"] and all(s.ok for s in tr.steps)
    assert len(tr.steps[0].result["results"]) == 3 and tr.steps[1].result["status"] == "sent"
    # results fed back: the 2nd request carries the search result, the 3rd also the email result, with matching ids
    assert len(seen) == 3
    tool_msgs = [m for m in seen[2]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_msgs] == ["call_a", "call_b"]
    assert json.loads(tool_msgs[0]["content"])["query"] == "Brighton tide tables"
    assert json.loads(tool_msgs[1]["content"])["message_id"] == tr.steps[1].result["message_id"]
    # the offered tools (chain tools + 2 distractors) went to the server
    assert {t["function"]["name"] for t in seen[0]["tools"]} == set(tr.tools) and len(tr.tools) == 4
    # final answer and a well-formed trace
    assert tr.termination == "final_answer" and tr.final_answer == "I found the tide tables and emailed them to Anna."
    assert [m["role"] for m in tr.messages] == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert tr.turns == 3 and tr.llm_seconds > 0 and tr.seconds >= tr.llm_seconds
    Trajectory.model_validate_json(tr.model_dump_json())


def test_loopback_server_error_recovery_and_cap():
    "A bad call and an unparsable one are reported back; the episode continues; then the tool-call cap ends it."
    seen = []
    script = [[_call("c1", "search_google", {"query": 7}), _call("c2", "delete_everything", {})],
              [_call("c3", "search_google", "{not json")],
              [_call("c4", "search_google", {"query": "ok"}), _call("c5", "search_google", {"query": "again"})]]
    with ServerThread(scripted_app(script, seen)) as srv:
        backend = OpenAIBackend("scripted", base_url=srv.url, api_key_env="AGENTALIGN_TEST_NO_KEY", format_retries=0)
        tr = run_episode_sync(backend, TASK, AgentConfig(max_tool_calls=3, max_turns=6))
    assert tr.steps[0].result["field"] == "query" and tr.steps[1].result["code"] == "unknown_tool"
    assert tr.n_format_errors == 1                                   # "{not json" came back as a correction message
    assert any(m["role"] == "user" and "could not be read as a tool call" in m["content"] for m in seen[-1]["messages"])
    assert tr.termination == "max_tool_calls" and tr.n_tool_calls == 3 and tr.steps[2].ok
    ids = [c["id"] for m in tr.messages if m.get("tool_calls") for c in m["tool_calls"]]
    assert sorted(ids) == sorted(m["tool_call_id"] for m in tr.messages if m["role"] == "tool")


def test_loopback_server_down_is_llm_error(tmp_path):
    "A backend that cannot reach its server: the task is a failure (llm_error), not a record; a rerun retries it without duplicating lines."
    backend = OpenAIBackend("scripted", base_url="http://127.0.0.1:9/v1", api_key_env="AGENTALIGN_TEST_NO_KEY", max_retries=0)
    trs, fs = run_episodes_sync(backend, [TASK], out=tmp_path, progress=False)
    assert trs == [] and [f.reason for f in fs] == ["llm_error"] and "connection" in fs[0].detail
    assert Trajectory.model_validate_json(fs[0].raw).termination == "llm_error"          # the partial trace is kept
    assert not (tmp_path / "records.jsonl").exists() or (tmp_path / "records.jsonl").read_text() == ""
    for _ in range(2):                                                                 # reruns: retried, never duplicated
        backend = OpenAIBackend("scripted", base_url="http://127.0.0.1:9/v1", api_key_env="AGENTALIGN_TEST_NO_KEY", max_retries=0)
        trs, fs = run_episodes_sync(backend, [TASK], out=tmp_path, progress=False)
        assert trs == [] and len(fs) == 1
        assert len((tmp_path / "failures.jsonl").read_text().splitlines()) == 1


def test_embedded_model_loop():
    "The embedded 135M model drives the loop: turns happen, the trace is well formed, a termination reason is recorded."
    backend = make_backend(LLMConfig(backend="local"))
    task = AgentTask(id="emb", instruction="Search the web for 'how to repot a monstera' and tell me the first result.",
                     tools=["search_google"])
    tr = run_episode_sync(backend, task, AgentConfig(max_turns=2, max_tool_calls=2, max_tokens=64, timeout=900))
    # the termination reason is the one the trace implies (not just any of the possible ones)
    asst = [m for m in tr.messages if m["role"] == "assistant"]
    capped = any(m["role"] == "tool" and json.loads(m["content"]).get("code") == "tool_call_limit" for m in tr.messages)
    expected = ("llm_error" if tr.error else "max_tool_calls" if capped else
                "final_answer" if tr.messages[-1]["role"] == "assistant" and not tr.messages[-1].get("tool_calls") else "max_turns")
    assert tr.termination == expected, (tr.termination, expected, tr.messages)
    assert (tr.final_answer is not None) == (expected == "final_answer") and 1 <= tr.turns <= 2 and tr.llm_seconds > 0
    assert len(asst) == tr.turns - (expected == "llm_error")          # one assistant message per completed turn
    assert tr.messages[0]["role"] == "system" and tr.messages[1]["role"] == "user" and tr.messages[2]["role"] == "assistant"
    ids = [c["id"] for m in tr.messages if m.get("tool_calls") for c in m["tool_calls"]]
    assert sorted(ids) == sorted(m["tool_call_id"] for m in tr.messages if m["role"] == "tool")
    assert tr.n_tool_calls == len(tr.steps) and all(isinstance(s.result, dict) for s in tr.steps)
    Trajectory.model_validate_json(tr.model_dump_json())
    # min_tool_calls asks for a tool call (tool_choice="required"): constrained decoding makes even the 135M model
    # call an offered tool, which the environment executes and feeds back
    tr = run_episode_sync(backend, task, AgentConfig(max_turns=2, max_tool_calls=2, min_tool_calls=1, max_tokens=64, timeout=900))
    assert tr.n_tool_calls >= 1 and tr.steps[0].tool == "search_google", tr.messages
    assert any(m["role"] == "tool" and m["tool_call_id"] == tr.steps[0].call_id for m in tr.messages)


def flaky_app(script: list, seen: list, down: set):
    "`scripted_app`, but a task whose instruction is in `down` gets HTTP 403 (a permanent error: the episode fails)."
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    inner = scripted_app(script, seen)
    app = FastAPI()
    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        body = await request.json()
        if body["messages"][1]["content"] in down:
            seen.append(body); return JSONResponse({"error": {"message": "forbidden", "type": "test"}}, status_code=403)
        n = sum(m["role"] == "assistant" for m in body["messages"]); seen.append(body)
        reply = script[min(n, len(script) - 1)]
        if isinstance(reply, str): return _completion({"role": "assistant", "content": reply}, "stop")
        return _completion({"role": "assistant", "content": None, "tool_calls": reply}, "tool_calls")
    return app


def test_cli_agent_run_resumes(tmp_path):
    """`agentalign agent-run` against the scripted server: a failed task is a failure only; a rerun runs only that task
    and then the failures file is empty; a changed tasks file is refused with one line; every task failing exits 2."""
    from typer.testing import CliRunner
    from agentalign.core import app
    import agentalign.agent  # registers the command
    seen, down = [], {"Find tide tables 1."}
    script = [[_call("call_a", "search_google", {"query": "Brighton tide tables"})], "Done."]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"t{i}", "instruction": f"Find tide tables {i}.", "tools": ["search_google"]}) + "\n" for i in range(3)))
    out = tmp_path / "run"; st = out / "agent"
    lines = lambda p: [json.loads(l) for l in p.read_text().splitlines()] if p.exists() else []
    with ServerThread(flaky_app(script, seen, down)) as srv:
        args = ["agent-run", str(tasks), "--out", str(out), "--backend", "openai", "--model", "scripted", "--base-url", srv.url,
                "--api-key-env", "AGENTALIGN_TEST_NO_KEY", "--distractors", "1"]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
        assert len(seen) == 5                                           # t0, t2: two turns each; t1: one refused request
        assert sorted(x["id"] for x in lines(st / "records.jsonl")) == ["t0", "t2"]
        assert [(f["item_id"], f["reason"]) for f in lines(st / "failures.jsonl")] == [("t1", "llm_error")]
        down.clear()
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
        assert len(seen) == 7                                           # only t1 ran again
        assert sorted(x["id"] for x in lines(st / "records.jsonl")) == ["t0", "t1", "t2"] and lines(st / "failures.jsonl") == []
        summary = json.loads((st / "summary.json").read_text())
        assert summary["records"] == summary["episodes"] == 3 and summary["failures"] == 0 and summary["tool_calls"] == 3
        assert (out / "figures" / "agent_episodes.png").exists() and not (out / "agent_episodes.png").exists()
        with tasks.open("a") as f: f.write(json.dumps({"id": "t3", "instruction": "Find tide tables 3.", "tools": ["search_google"]}) + "\n")
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2 and "input changed: " in r.output and len(r.output.strip().splitlines()) == 1, r.output
        r = CliRunner().invoke(app, args + ["--overwrite"])                # starts over (answers come from the run's LLM cache)
        assert r.exit_code == 0 and len(lines(st / "records.jsonl")) == 4, r.output
        down.update(f"Find tide tables {i}." for i in range(4))
        out2 = tmp_path / "run2"
        r = CliRunner().invoke(app, [a if a != str(out) else str(out2) for a in args])
        errs = [l for l in r.output.splitlines() if l.startswith("error:")]
        assert r.exit_code == 2 and len(errs) == 1 and "all 4 item(s) failed" in errs[0], r.output
        assert lines(out2 / "agent" / "records.jsonl") == [] and len(lines(out2 / "agent" / "failures.jsonl")) == 4


def test_cli_agent_run_bad_tasks_file_is_one_line(tmp_path):
    from typer.testing import CliRunner
    from agentalign.core import app
    import agentalign.agent
    (tmp_path / "latin.jsonl").write_bytes(b'{"instruction": "caf\xe9", "tools": ["search_google"]}\n')
    for path, msg in [(tmp_path, "not a file"), (tmp_path / "latin.jsonl", "not a UTF-8 text file")]:
        r = CliRunner().invoke(app, ["agent-run", str(path), "--out", str(tmp_path / "run")])
        assert r.exit_code == 2 and msg in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output, r.output
