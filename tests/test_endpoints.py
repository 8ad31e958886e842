"""Conformance with third-party OpenAI-compatible servers, on the scripted server of `conftest.py`.

Every synthesis role of the tiny preset is pointed at one endpoint (`[roles.default]` with backend, model and
base_url only), and the server then misbehaves the way real servers were seen to: it drops `tools`, answers text
where `tool_choice` required a call, cuts JSON at `max_tokens`, dies in the middle of a stage, hangs, answers 5xx or
401. Each case checks what the stage did at the server (requests counted there, headers logged) and in its files.
The stages run in this process (`run_instructions`, `run_quality`, `run_responses`), so the suite stays fast.
"""
import json, os, threading
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import pytest
from typer.testing import CliRunner

from conftest import Cut, Fault, call, reply
from test_responses import quality_row, roles, write_quality
from test_synthesis import answer as writer_answer
from agentalign.core import AgentAlignError, app
from agentalign.llm.base import ChatRequest, LLMConfig, run_batch_sync
from agentalign.llm.factory import make_backend
from agentalign.settings import Settings
from agentalign.instructions import InstructionsConfig, run_instructions
from agentalign.quality import QualityConfig, run_quality
from agentalign.responses import ResponsesConfig, run_responses
from agentalign.writing import REWRITE_SYSTEM

SECRET = "sk-endpoint-test-" + "k9" * 12


def synthesis(req):
    "Every request of the tiny preset's synthesis roles: instruction rewrites (JSON), judge verdicts (JSON), text rewrites."
    props = (req.response_schema or {}).get("properties", {})
    if "request" in props or "instructions" in props: return writer_answer(req)
    if "harmful" in props:
        text = req.messages[-1]["content"].lower()
        return {"harmful": any(w in text for w in ("steal", "hack", "fraud", "without", "fake", "secretly")), "rationale": "scripted"}
    system = req.messages[0]["content"]
    assert system.startswith(REWRITE_SYSTEM[:30]), system[:80]        # tiny: refusals and answers are rewrites of drafts
    return "Here is the rewritten message: " + req.messages[-1]["content"]


def tiny(url: str, **role) -> Settings:
    "The tiny preset with every synthesis role on `url`, from a config holding only backend, model and base_url (and `role`)."
    return Settings("tiny", {"roles": {"default": {"backend": "openai", "model": "scripted", "base_url": url, **role}}})


def bodies(entries) -> list[str]:
    return [json.dumps(e["body"], sort_keys=True) for e in entries]


def rows(p: Path) -> list[dict]:
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.exists() else []


@pytest.fixture
def keyed(monkeypatch):
    "An OpenAI key in the environment, which no request to the scripted server may carry."
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


# ------------------------------------------------------------------------------------------------ the whole tiny path
def test_tiny_preset_every_synthesis_role_on_one_endpoint(tmp_path, scripted_server, keyed):
    srv = scripted_server(synthesis)
    s, run = tiny(srv.url), tmp_path / "run"
    cfgs = [s.stage(InstructionsConfig), s.stage(QualityConfig), s.stage(ResponsesConfig)]
    assert [c.model_dump()[r]["base_url"] for c, r in zip(cfgs, ("writer", "judge", "refuser"))] == [srv.url] * 3
    assert cfgs[2].agent.base_url == srv.url and all(c.model_dump()[r]["api_key_env"] is None for c, r in zip(cfgs, ("writer", "judge", "agent")))
    ins = run_instructions(run, cfgs[0])
    qc = run_quality(run, cfgs[1])
    rs = run_responses(run, cfgs[2], progress=False)
    assert ins["produced"] > 0 and qc["kept"] > 0 and rs["records"] > 0
    assert srv.requests == srv.succeeded() and srv.requests >= ins["requests"] + qc["judge"]["calibration"]["items"]
    assert not srv.sent_authorization()                                   # no key anywhere, probes included
    assert srv.probes and all(e["status"] == 200 for e in srv.probes)
    assert json.loads((run / "quality" / "summary.json").read_text())["judge"]["model"] == "openai:scripted"
    assert {r["responder"] for r in rows(run / "responses" / "records.jsonl")} == {"openai:scripted"}
    n = srv.requests                                                      # the same stages again: all from the run's cache
    run_instructions(run, cfgs[0]); run_quality(run, cfgs[1]); run_responses(run, cfgs[2], progress=False)
    assert srv.requests == n


# ------------------------------------------------------------------------------------------------ a server that dies
def test_connection_refused_mid_quality_then_a_rerun_sends_only_what_failed(tmp_path, scripted_server):
    srv = scripted_server(synthesis)
    s, run = tiny(srv.url, max_retries=1, concurrency=2), tmp_path / "run"
    run_instructions(run, s.stage(InstructionsConfig))
    before = srv.requests
    judged = []
    def dying(req):                                                       # the server goes down after the 5th judge answer
        out = synthesis(req)
        if req.response_schema and "harmful" in req.response_schema["properties"]:
            judged.append(1)
            if len(judged) == 5: threading.Thread(target=srv.stop).start()
        return out
    srv.backend.script = dying
    with pytest.raises(AgentAlignError) as e:
        run_quality(run, s.stage(QualityConfig))
    line = str(e.value)
    assert line.startswith("quality: the judge: ") and "got no answer (connection_error" in line and "\n" not in line
    assert "calibration accuracy" not in line and not (run / "quality" / "summary.json").exists()
    first = srv.completions[before:]                                      # (the refused ones never reached it)
    ok = {b for b, e in zip(bodies(first), first) if e["status"] == 200}
    assert len(ok) >= 5
    srv.backend.script = synthesis
    srv.start()                                                           # the same port again
    mark = srv.requests
    qc = run_quality(run, s.stage(QualityConfig))
    again = srv.completions[mark:]
    assert qc["kept"] > 0 and all(e["status"] == 200 for e in again)
    assert not ok & set(bodies(again))                                    # nothing that had succeeded was asked again,
    assert qc["cached"] == len(ok) and qc["llm_requests"] == len(ok) + len(again) == len(ok) + len(set(bodies(again)))   # the rest once


# ------------------------------------------------------------------------------------------------ hang, 5xx, 401
def test_hang_and_5xx_fail_with_the_attempts_really_made(tmp_path, scripted_server):
    "A hung request costs two timed-out attempts (never max_retries of them); a 503 every attempt; failures count them."
    items = [quality_row(0, "harmful", "Placeholder harmful request one."), quality_row(5, "harmful", "Placeholder harmful request two."),
             quality_row(9, "harmful", "Placeholder harmful request three.")]
    write_quality(tmp_path, items)
    hang, down = "Placeholder harmful request one", "Placeholder harmful request two"
    from agentalign.writing import refusal_draft
    from agentalign.responses import ResponseInput
    drafts = {refusal_draft(ResponseInput.model_validate(r), 0): r["instruction"] for r in items}
    def fault(body, headers, n):
        text = drafts.get(body["messages"][-1]["content"], "")
        return Fault.hang(3) if text.startswith(hang) else Fault.status(503, "overloaded") if text.startswith(down) else None
    srv = scripted_server(synthesis, fault=fault)
    cfg = tiny(srv.url, timeout=0.4, max_retries=3).stage(ResponsesConfig)
    s = run_responses(tmp_path, cfg, progress=False)
    fails = {f["item_id"]: f for f in rows(tmp_path / "responses" / "failures.jsonl")}
    assert s["records"] == 1 and set(fails) == {items[0]["id"], items[1]["id"]}
    seen = lambda start: sum(drafts.get(e["body"]["messages"][-1]["content"], "").startswith(start) for e in srv.completions)
    f_hang, f_down = fails[items[0]["id"]], fails[items[1]["id"]]
    assert f_hang["detail"].startswith("timeout: ") and f_hang["attempts"] == seen(hang) == 2
    assert f_down["detail"].startswith("server_error: HTTP 503") and f_down["attempts"] == seen(down) == 4


def test_401_is_one_line_before_any_stage_request(tmp_path, scripted_server, monkeypatch):
    monkeypatch.setenv("MY_ENDPOINT_KEY", SECRET)
    srv = scripted_server(synthesis, fault=lambda body, headers, n: Fault.status(401, f"Incorrect API key provided: {SECRET}"))
    with pytest.raises(AgentAlignError) as e:
        run_instructions(tmp_path, tiny(srv.url, api_key_env="MY_ENDPOINT_KEY").stage(InstructionsConfig))
    assert str(e.value).startswith(f"instruction writer at {srv.url} (model scripted): the endpoint refused the request (http_error: HTTP 401")
    assert SECRET not in str(e.value) and srv.requests == 0 and len(srv.probes) == 1


# ------------------------------------------------------------------------------------------------ tools and tool_choice
def agent_items():
    return [quality_row(1, "benign", "Placeholder benign request one."), quality_row(61, "benign", "Placeholder benign request two.")]


def test_dropped_tools_are_one_line_before_agent_mode_spends_a_request(tmp_path, scripted_server):
    items = agent_items(); write_quality(tmp_path, items)
    srv = scripted_server(roles(items), drop_tools=True)
    cfg = tiny(srv.url).stage(ResponsesConfig, {"mode": "agent"})
    with pytest.raises(AgentAlignError) as e:
        run_responses(tmp_path, cfg, progress=False)
    assert str(e.value).startswith(f"refuser and agent at {srv.url} (model scripted): the server ignores `tools`") and "--jinja" in str(e.value)
    assert srv.requests == 0 and len(srv.probes) == 2                     # the required call, then the same prompt without tools


def test_the_servers_own_word_that_its_template_has_no_tools_is_taken(tmp_path, scripted_server):
    "llama.cpp's `/props` says the chat template renders no tools: the same one line, after one probe request instead of two."
    items = agent_items(); write_quality(tmp_path, items)
    caps = {"supports_tools": False, "supports_tool_calls": False, "supports_system_role": True}
    srv = scripted_server(roles(items), drop_tools=True, props={"chat_template_caps": caps})
    with pytest.raises(AgentAlignError) as e:
        run_responses(tmp_path, tiny(srv.url).stage(ResponsesConfig, {"mode": "agent"}), progress=False)
    assert str(e.value).startswith(f"refuser and agent at {srv.url} (model scripted): the server ignores `tools`")
    assert srv.requests == 0 and len(srv.probes) == 1 and [x["path"] for x in srv.log] == ["/props"]


def test_dropped_tools_warn_where_they_are_only_offered(tmp_path, scripted_server, capsys):
    items = [quality_row(0, "harmful", "Placeholder harmful request one.")]; write_quality(tmp_path, items)
    srv = scripted_server(lambda req: "I can't help with this: it would be harmful and illegal. I can offer something safe instead.", drop_tools=True)
    s = run_responses(tmp_path, tiny(srv.url).stage(ResponsesConfig, {"mode": "plan", "refusal_mode": "free", "tools_in_prompt": True}), progress=False)
    warn = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning: ")]
    assert s["records"] == 1 and len(warn) == 1 and "ignores `tools`" in warn[0] and "writes without seeing the tools" in warn[0]


def test_text_before_a_required_call_is_rejected_not_a_final_answer(tmp_path, scripted_server):
    "llama-server answered free text cut at max_tokens where a call was required: it is retried, and the episode goes on."
    items = agent_items(); write_quality(tmp_path, items)
    agent, texts = roles(items), []
    def chatty(req):
        if req.tool_choice == "required" and req.seed == 0 + sum(m["role"] == "assistant" for m in req.messages):   # first try of a turn
            texts.append(1); return Cut("I will now look up the details you asked for and then")
        return agent(req)
    srv = scripted_server(chatty)
    cfg = tiny(srv.url).stage(ResponsesConfig, {"mode": "agent", "agent_min_tool_calls": "chain"})
    s = run_responses(tmp_path, cfg, progress=False)
    recs = {r["instruction_id"]: r for r in rows(tmp_path / "responses" / "records.jsonl")}
    assert s["records"] == 2 and set(recs) == {it["id"] for it in items}
    for it in items:
        r = recs[it["id"]]
        assert r["mode"] == "agent" and r["validation"]["ok"] and r["validation"]["n_tool_calls"] == len(it["argument_plan"])
        assert not any(m["role"] == "assistant" and "I will now look up" in (m.get("content") or "") for m in r["messages"])
    required = [e for e in srv.completions if e["body"].get("tool_choice") == "required"]
    assert len(texts) == sum(len(it["argument_plan"]) for it in items) and len(required) == 2 * len(texts)


# ------------------------------------------------------------------------------------------------ JSON cut at max_tokens
def test_json_cut_at_max_tokens_is_reported_as_length(tmp_path, scripted_server):
    srv = scripted_server(lambda req: Cut('{"request": "Hey, a favour: please send the'))
    s = run_instructions(tmp_path, tiny(srv.url).stage(InstructionsConfig))
    why = {w for k in s["per_kind"].values() for w in k["rewrite_fallbacks"]}
    assert why == {"length"}, s["per_kind"]                               # not invalid_json or schema_mismatch
    assert srv.requests == 3 * s["requests"]                              # each rewrite tried 1 + format_retries (2) times


# ------------------------------------------------------------------------------------------------ keys
def test_no_key_variable_respond_runs_and_naming_one_later_resumes(tmp_path, scripted_server):
    items = [quality_row(0, "harmful", "Placeholder harmful request one.")]; write_quality(tmp_path, items)
    srv = scripted_server(roles(items))
    conf = tmp_path / "c.toml"
    conf.write_text(f'[roles.default]\nbackend = "openai"\nmodel = "scripted"\nbase_url = "{srv.url}"\n')
    import agentalign.responses  # registers the command
    args = ["respond", "--out", str(tmp_path), "--config", str(conf), "--no-figures"]
    r = CliRunner().invoke(app, args, env={"OPENAI_API_KEY": SECRET})
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert srv.requests > 0 and not srv.sent_authorization()
    n = srv.requests
    conf.write_text(conf.read_text() + 'api_key_env = "MY_ENDPOINT_KEY"\n')   # the corrected config: the stage resumes, not refused
    r = CliRunner().invoke(app, args, env={"MY_ENDPOINT_KEY": "sk-mine-0123456789"})
    assert r.exit_code == 0, r.output
    assert srv.requests == n


def test_paper_preset_sends_no_key_to_a_local_server(tmp_path, scripted_server, keyed):
    srv = scripted_server(synthesis)
    conf = tmp_path / "c.toml"
    conf.write_text(f'[roles.default]\nmodel = "scripted"\nbase_url = "{srv.url}"\n'
                    '[instructions]\nchains = "curated"\nmode = "rewrite"\nlimit = 1\ncounts = { harmful = 1, benign = 1, borderline = 0 }\n')
    import agentalign.instructions  # registers the command
    r = CliRunner().invoke(app, ["instructions", "--out", str(tmp_path / "run"), "--preset", "paper", "--config", str(conf), "--no-figures"])
    assert r.exit_code == 0, r.output
    assert srv.requests >= 2 and not srv.sent_authorization()


# ------------------------------------------------------------------------------------------------ the paper preset
def test_paper_preset_names_no_key_needs_a_base_model_and_scores_test_public_with_an_llm_judge(tmp_path):
    from agentalign.agentharm.evaluate import AgentHarmConfig
    from agentalign.dataset import DatasetConfig, mix_in
    from agentalign.settings import known_roles
    s = Settings("paper")
    for role in [r for r, by_default in known_roles().items() if by_default] + ["agentharm_judge"]:
        assert role not in s.layers[0][0].get("roles", {}) or "api_key_env" not in s.layers[0][0]["roles"][role], role
    assert "api_key_env" not in s.layers[0][0]["roles"]["default"]
    with pytest.raises(AgentAlignError) as e:
        s.stage(AgentHarmConfig, {"label": "base"})
    assert str(e.value).startswith("[pipeline] base_model: preset paper names no model to fine-tune and score")
    local = Settings("paper", {"pipeline": {"base_model": str(tmp_path)}, "roles": {"default": {"model": "m", "base_url": "http://127.0.0.1:9/v1"}}})
    ah = local.stage(AgentHarmConfig, {"label": "base"})
    assert ah.split == "test_public" and ah.model == str(tmp_path)
    assert ah.judge.model_dump(exclude_defaults=True) == {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "concurrency": 32}
    assert local.stage(AgentHarmConfig, {"label": "sft", "model": "sft/model"}).judge.base_url == "http://127.0.0.1:9/v1"
    assert Settings("tiny").stage(AgentHarmConfig).judge == "offline"          # other presets: the offline judge unless named
    mix = local.stage(DatasetConfig).mix
    assert sorted(m.split(":")[0] for m in mix) == ["glaive", "toolace"] and abs(sum(float(m.split(":")[1]) for m in mix) - 0.214) < 0.001
    with pytest.raises(AgentAlignError) as e:                                   # offline (HF_HUB_OFFLINE=1), nothing cached: one line
        mix_in(100, mix, 0)
    assert str(e.value).startswith("--mix toolace: cannot load Team-ACE/ToolACE (the hub is offline") and "\n" not in str(e.value)


def test_timeout_is_a_role_option_and_changes_no_result(tmp_path, scripted_server):
    srv = scripted_server(lambda req: "ok", fault=lambda body, headers, n: Fault.hang(2))
    b = make_backend(LLMConfig(backend="openai", model="m", base_url=srv.url, timeout=0.3, max_retries=4))
    res = run_batch_sync(b, [ChatRequest(messages=[{"role": "user", "content": "q"}], id="a", timeout=60)], progress=False)
    assert res[0].failure.reason == "timeout" and res[0].failure.attempts == srv.requests == 2   # a timeout is retried once only
    s = Settings("tiny", {"roles": {"default": {"timeout": 30}}})
    assert s.stage(QualityConfig).judge.timeout == 30
