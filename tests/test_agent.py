"""Agent loop against real LLM backends: the scripted OpenAI-compatible server of `conftest.py` (through the real
`OpenAIBackend` and its HTTP client), and the embedded SmolLM2-135M model.

The scripted server answers a conversation by its number of assistant turns so far (`turns`): first a `search_google`
call, then a `send_gmail` call, then a final answer. Its request log lets the tests check what the loop sent: the
tool results fed back with the right `tool_call_id`s, the offered tools, how many requests each run made."""
import json, os
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from conftest import Fault, call, free_port
from agentalign.agent import AgentTask, AgentConfig, run_episode_sync, run_episodes_sync, Trajectory
from agentalign.llm.openai import OpenAIBackend
from agentalign.llm.factory import make_backend
from agentalign.llm.base import LLMConfig

TASK = AgentTask(id="tides", instruction="Find the Brighton tide tables and email them to anna@example.com.",
                 tools=["search_google", "send_gmail"])


def turns(script: list):
    "A server script answering the n-th turn of a conversation (n = assistant messages so far) with script[n] (the last one repeats)."
    return lambda req: script[min(sum(m["role"] == "assistant" for m in req.messages), len(script) - 1)]

def backend_for(srv, **kw) -> OpenAIBackend:
    return OpenAIBackend("scripted", base_url=srv.url, api_key_env="AGENTALIGN_TEST_NO_KEY", **kw)


def test_loopback_server_two_tools_in_sequence(scripted_server):
    srv = scripted_server(turns([[call("search_google", {"query": "Brighton tide tables", "num_results": 3}, "call_a")],
                                 [call("send_gmail", {"sender": "me@gmail.com", "to": ["anna@example.com"], "subject": "Tides", "body": "Links inside"}, "call_b")],
                                 "I found the tide tables and emailed them to Anna."]))
    tr = run_episode_sync(backend_for(srv), TASK, AgentConfig(seed=1, n_distractors=2))
    # both calls executed, in order, successfully
    assert [s.tool for s in tr.steps] == ["search_google", "send_gmail"] and all(s.ok for s in tr.steps)
    assert len(tr.steps[0].result["results"]) == 3 and tr.steps[1].result["status"] == "sent"
    # results fed back: the 2nd request carries the search result, the 3rd also the email result, with matching ids
    assert srv.requests == 3
    bodies = [e["body"] for e in srv.completions]
    tool_msgs = [m for m in bodies[2]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_msgs] == ["call_a", "call_b"]
    assert json.loads(tool_msgs[0]["content"])["query"] == "Brighton tide tables"
    assert json.loads(tool_msgs[1]["content"])["message_id"] == tr.steps[1].result["message_id"]
    # the offered tools (chain tools + 2 distractors) went to the server, every turn with its own seed
    assert {t["function"]["name"] for t in bodies[0]["tools"]} == set(tr.tools) and len(tr.tools) == 4
    assert [b["seed"] for b in bodies] == [1, 2, 3]
    # final answer and a well-formed trace
    assert tr.termination == "final_answer" and tr.final_answer == "I found the tide tables and emailed them to Anna."
    assert [m["role"] for m in tr.messages] == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert tr.turns == 3 and tr.model == "scripted"
    assert Trajectory.model_validate_json(tr.model_dump_json()) == tr


def test_loopback_server_error_recovery_and_cap(scripted_server):
    "A bad call and an unparsable one are reported back; the episode continues; then the tool-call cap ends it."
    srv = scripted_server(turns([[call("search_google", {"query": 7}, "c1"), call("delete_everything", {}, "c2")],
                                 [call("search_google", "{not json", "c3")],
                                 [call("search_google", {"query": "ok"}, "c4"), call("search_google", {"query": "again"}, "c5")]]))
    tr = run_episode_sync(backend_for(srv, format_retries=0), TASK, AgentConfig(max_tool_calls=3, max_turns=6))
    assert tr.steps[0].result["field"] == "query" and tr.steps[1].result["code"] == "unknown_tool"
    assert tr.n_format_errors == 1                                   # "{not json" came back as a correction message
    last = srv.completions[-1]["body"]["messages"]
    assert [m["content"].startswith("Your previous reply could not be read as a tool call") for m in last if m["role"] == "user"] == [False, True]
    assert tr.termination == "max_tool_calls" and tr.n_tool_calls == 3 and tr.steps[2].ok and srv.requests == 3
    assert json.loads(tr.messages[-1]["content"])["code"] == "tool_call_limit"   # c5: answered, not executed
    ids = [c["id"] for m in tr.messages if m.get("tool_calls") for c in m["tool_calls"]]
    assert ids == [m["tool_call_id"] for m in tr.messages if m["role"] == "tool"] == ["c1", "c2", "c4", "c5"]   # c3 was unreadable


def test_loopback_server_down_is_llm_error(tmp_path):
    "A backend that cannot reach its server: the task is a failure (llm_error), not a record; a rerun retries it without duplicating lines."
    url = f"http://127.0.0.1:{free_port()}/v1"                      # nothing listens there
    backend = OpenAIBackend("scripted", base_url=url, api_key_env="AGENTALIGN_TEST_NO_KEY", max_retries=0)
    trs, fs = run_episodes_sync(backend, [TASK], out=tmp_path, progress=False)
    assert trs == [] and [f.reason for f in fs] == ["llm_error"] and "connection" in fs[0].detail
    assert Trajectory.model_validate_json(fs[0].raw).termination == "llm_error"          # the partial trace is kept
    assert not (tmp_path / "records.jsonl").exists() or (tmp_path / "records.jsonl").read_text() == ""
    for _ in range(2):                                                                 # reruns: retried, never duplicated
        backend = OpenAIBackend("scripted", base_url=url, api_key_env="AGENTALIGN_TEST_NO_KEY", max_retries=0)
        trs, fs = run_episodes_sync(backend, [TASK], out=tmp_path, progress=False)
        assert trs == [] and len(fs) == 1
        assert len((tmp_path / "failures.jsonl").read_text().splitlines()) == 1


def test_embedded_model_loop():
    """The embedded 135M model drives the loop. A required tool call (constrained decoding) in a one-turn episode: the
    model calls the only offered tool, the environment executes it and the episode ends by its turn cap; the same
    settings again give the same trace (greedy decoding, a seeded world)."""
    backend = make_backend(LLMConfig(backend="local"))
    task = AgentTask(id="emb", instruction="Search the web for 'how to repot a monstera' and tell me the first result.",
                     tools=["search_google"])
    cfg = AgentConfig(max_turns=1, min_tool_calls=1, max_tokens=64, timeout=900)
    tr = run_episode_sync(backend, task, cfg)
    assert (tr.termination, tr.turns, tr.final_answer, tr.error) == ("max_turns", 1, None, None), tr.messages
    assert tr.n_tool_calls >= 1 and {s.tool for s in tr.steps} == {"search_google"}, tr.messages
    assert [m["role"] for m in tr.messages] == ["system", "user", "assistant"] + ["tool"] * tr.n_tool_calls
    assert [m["tool_call_id"] for m in tr.messages[3:]] == [s.call_id for s in tr.steps]
    assert [json.loads(m["content"]) for m in tr.messages[3:]] == [s.result for s in tr.steps]
    again = run_episode_sync(backend, task, cfg)
    assert again.messages == tr.messages


def test_cli_agent_run_resumes(tmp_path, scripted_server):
    """`agentalign agent-run` against the scripted server: a failed task is a failure only; a rerun runs only that task
    and then the failures file is empty; a changed tasks file is refused with one line; every task failing exits 2."""
    from typer.testing import CliRunner
    from agentalign.core import app
    import agentalign.agent  # registers the command
    down = {"Find tide tables 1."}
    forbidden = lambda body, headers, n: Fault.status(403, "forbidden") if body["messages"][1]["content"] in down else None
    srv = scripted_server(turns([[call("search_google", {"query": "Brighton tide tables"}, "call_a")], "Done."]), fault=forbidden)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"t{i}", "instruction": f"Find tide tables {i}.", "tools": ["search_google"]}) + "\n" for i in range(3)))
    out = tmp_path / "run"; st = out / "agent"
    lines = lambda p: [json.loads(l) for l in p.read_text().splitlines()] if p.exists() else []
    args = ["agent-run", str(tasks), "--out", str(out), "--backend", "openai", "--model", "scripted", "--base-url", srv.url,
            "--api-key-env", "AGENTALIGN_TEST_NO_KEY", "--distractors", "1"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert srv.requests == 5 and srv.succeeded() == 4                 # t0, t2: two turns each; t1: one refused request
    assert sorted(x["id"] for x in lines(st / "records.jsonl")) == ["t0", "t2"]
    assert [(f["item_id"], f["reason"]) for f in lines(st / "failures.jsonl")] == [("t1", "llm_error")]
    down.clear()
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert srv.requests == 7                                          # only t1 ran again
    assert sorted(x["id"] for x in lines(st / "records.jsonl")) == ["t0", "t1", "t2"] and lines(st / "failures.jsonl") == []
    summary = json.loads((st / "summary.json").read_text())
    assert summary["records"] == summary["episodes"] == 3 and summary["failures"] == 0 and summary["tool_calls"] == 3
    assert (out / "figures" / "agent_episodes.png").exists() and not (out / "agent_episodes.png").exists()
    with tasks.open("a") as f: f.write(json.dumps({"id": "t3", "instruction": "Find tide tables 3.", "tools": ["search_google"]}) + "\n")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "input changed: " in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert srv.requests == 7
    r = CliRunner().invoke(app, args + ["--overwrite"])               # starts over; t0-t2 are answered from the run's LLM cache
    assert r.exit_code == 0 and len(lines(st / "records.jsonl")) == 4, r.output
    assert srv.requests == 9                                          # only t3's two turns reached the server
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
    for path, msg in [(tmp_path, "not a file"), (tmp_path / "latin.jsonl", "latin.jsonl:1: not UTF-8")]:
        r = CliRunner().invoke(app, ["agent-run", str(path), "--out", str(tmp_path / "run")])
        assert r.exit_code == 2 and msg in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output, r.output
