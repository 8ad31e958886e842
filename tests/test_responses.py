"""Responses stage (`agentalign respond`) end to end against the scripted OpenAI-compatible server of `conftest.py`.

The server plays both LLM roles and tells the requests apart by their system prompt (`roles`): the *refuser*
(refusals, with the tools offered), the *agent* (the agent loop's system prompt: it calls the instruction's planned
tools one per turn, taking linked values from the tool results it was fed, then answers), and the plan-mode writer
(connecting text, final answer). Markers in the (hand-written, placeholder) request texts script the misbehaviour:
`[comply-tool]` answers the first refusal attempt with a tool call and the second with compliant text,
`[comply-always]` never refuses, `[agent-skip]` makes the agent answer without using the tools. The server counts
the requests it answered; the kill-and-rerun test compares them with the answers stored in the run's LLM cache."""
import asyncio, json, os, signal, sqlite3, subprocess, sys, time
from contextlib import closing
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import pytest, yaml

from conftest import call
from agentalign.agent import DEFAULT_SYSTEM_PROMPT
from agentalign.chains import curated_chains, instantiate, PlanStep
from agentalign.core import app, stable_id
from agentalign.refusal import is_refusal
from agentalign.responses import ResponseRecord, ResponseInput
from agentalign.taxonomy import load_taxonomy
from agentalign.trajectories import link_arguments
from agentalign.writing import REFUSER_SYSTEM, NOTE_SYSTEM, ANSWER_SYSTEM, REWRITE_SYSTEM, refusal_draft, rewrite_problem

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
TAX = load_taxonomy()
CUR = curated_chains(TAX)
REFUSAL = "I can't help with this: it would be harmful and illegal. I can help you with something safe instead."
COMPLIANT = "Sure! I have started on it and will send you the results shortly."


# ------------------------------------------------------------------------------------------------ inputs
def quality_row(chain_index: int, label: str, text: str, keep: bool = True, seed: int = 0) -> dict:
    "A QualityRecord-shaped dict: a real instantiated chain (its plan executes), a hand-written placeholder text, quality fields set."
    c = CUR[chain_index]
    inst = instantiate(c, TAX, seed)
    return {"id": stable_id("instruction", inst.id, label, text), "chain_id": c.id, "instance_id": inst.id, "category": c.category,
            "subcategory": c.subcategory, "steps": c.steps, "tools": inst.tools, "argument_plan": [s.model_dump() for s in inst.argument_plan],
            "kind": label, "instruction": text, "generator": "test:hand", "prompt_version": "instructions-v1", "seed": seed, "index": 0,
            "persona": "", "tone": "", "form": "", "plan_coverage": 1.0, "source": "llm", "draft": None,
            "checks": {"structural": {"passed": True, "reason": "", "score": None}}, "judge_label": label, "judge_rationale": "",
            "judge_model": "test:judge", "label": label, "label_source": "judge", "keep": keep, "drop_reason": None}

def write_quality(run: Path, rows: list, broken_after: int | None = None) -> Path:
    p = run / "quality" / "records.jsonl"
    p.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in rows]
    if broken_after is not None: lines.insert(broken_after, '{"id": "torn", "instruction": ')
    p.write_text("\n".join(lines) + "\n")
    return p

def rows(p: Path) -> list[dict]:
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.exists() else []


# ------------------------------------------------------------------------------------------------ scripted roles
def roles(items: list[dict]):
    "The server script: each request answered by the role its system prompt names (see the module docstring)."
    plans = {r["instruction"]: [PlanStep.model_validate(s) for s in r["argument_plan"]] for r in items}
    # rewrite requests carry only the draft: which item's draft it is (rewrite mode, seed 0)
    drafts = {refusal_draft(ResponseInput.model_validate(r), 0): r["instruction"] for r in items if r["label"] == "harmful"}
    def script(req):
        msgs = req.messages
        system = msgs[0]["content"] if msgs[0]["role"] == "system" else ""
        user = next(m["content"] for m in msgs if m["role"] == "user")
        if system.startswith(REWRITE_SYSTEM[:30]):
            assert not req.tools
            return COMPLIANT if "[comply-always]" in drafts.get(user, "") else "Here is the rewritten message: Sorry. " + user
        if system.startswith(REFUSER_SYSTEM[:40]):
            assert req.tools, "refusals are written with the instruction's tools offered"
            if "[comply-always]" in user: return COMPLIANT
            if "[comply-tool]" in user and req.temperature < 0.8: return [call(req.tools[0]["function"]["name"], {}, "call_x")]
            if "[comply-tool]" in user and req.temperature < 1.0: return COMPLIANT
            return REFUSAL
        if system.startswith(NOTE_SYSTEM[:40]): return "Let me take care of the next step now."
        if system.startswith(ANSWER_SYSTEM[:40]):
            assert req.tool_choice == "none"
            return "All finished: every step went through as you asked."
        assert system == DEFAULT_SYSTEM_PROMPT, system[:80]
        if "[agent-skip]" in user: return "Done, no tools were needed."
        plan = plans[user]
        n = sum(m["role"] == "assistant" for m in msgs)
        if n >= len(plan): return "All done: every step went through."
        seen = {i + 1: json.loads(m["content"]) for i, m in enumerate(m for m in msgs if m["role"] == "tool")}
        args, _, _ = link_arguments(plan[n], plan, seen)
        return [call(plan[n].tool, args, f"call_{n}")]
    return script


def respond(run: Path, url: str, *extra: str, env: dict | None = None):
    from typer.testing import CliRunner
    import agentalign.responses  # registers the command
    return CliRunner().invoke(app, ["respond", "--out", str(run), "--backend", "openai", "--model", "scripted", "--base-url", url,
                                    "--api-key-env", "AGENTALIGN_TEST_NO_KEY", "--no-figures", *extra], env=env)

def cache_entries(run: Path) -> int:
    "The answers stored in the run's LLM cache (0 before it exists)."
    if not (run / "cache.sqlite").exists(): return 0
    with closing(sqlite3.connect(run / "cache.sqlite", timeout=30)) as db:
        try: return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        except sqlite3.OperationalError: return 0                 # the table is not there yet


# ------------------------------------------------------------------------------------------------ tests
def test_refusals_and_false_compliance(tmp_path, scripted_server):
    "Harmful items end as refusals without tool calls; scripted compliance (a tool call, then text) is rejected and retried or recorded."
    items = [quality_row(0, "harmful", "Placeholder harmful request one."),
             quality_row(20, "harmful", "Placeholder harmful request two [comply-tool]."),
             quality_row(40, "harmful", "Placeholder harmful request three [comply-always].")]
    write_quality(tmp_path, items)
    srv = scripted_server(roles(items))
    r = respond(tmp_path, srv.url, "--retries", "2", "--temperature", "0.7")
    assert r.exit_code == 0, r.output
    assert srv.requests == 1 + 3 + 3                                      # attempts: 1 refused at once, 3 until refused, 3 rejected
    recs = {x["instruction_id"]: ResponseRecord.model_validate(x) for x in rows(tmp_path / "responses" / "records.jsonl")}
    fails = {x["item_id"]: x for x in rows(tmp_path / "responses" / "failures.jsonl")}
    a, b = recs[items[0]["id"]], recs[items[1]["id"]]
    for rec, item in ((a, items[0]), (b, items[1])):
        assert rec.mode == "refusal" and rec.label == "harmful" and rec.source == "llm"
        assert rec.messages == [{"role": "user", "content": item["instruction"]}, {"role": "assistant", "content": REFUSAL}]
        offered = {t["function"]["name"] for t in rec.tools}
        assert offered >= set(item["tools"]) and len(offered) == len(set(item["tools"])) + 2     # the chain's tools + 2 distractors
        assert (rec.chain_id, rec.judge_model, rec.generator, rec.responder) == (item["chain_id"], "test:judge", "test:hand", "openai:scripted")
        assert rec.prompt_versions["instructions"] == "instructions-v1" and rec.seeds["instructions"] == 0
    assert a.attempts == 1 and a.validation["rejected"] == []
    # the tool call and the compliant text were rejected as false compliance, then a hotter attempt refused
    assert b.attempts == 3 and b.validation["rejected"][0].startswith("called_tool:") and b.validation["rejected"][1].startswith("not_refusal")
    # never refusing: a failure with every attempt's reason
    f = fails[items[2]["id"]]
    assert f["reason"] == "false_compliance" and f["attempts"] == 3 and f["detail"].count("not_refusal") == 3
    s = json.loads((tmp_path / "responses" / "summary.json").read_text())
    assert s["per_label"]["harmful"] == {"inputs": 3, "produced": 2, "failed": 1, "by_mode": {"refusal": 2}, "sources": {"llm": 2}, "yield": 0.6667}
    assert s["rejections"] == {"called_tool": 1, "not_refusal": 4}
    # rewrite mode on the same items: the always-compliant one ends as the drafted refusal
    write_quality(tmp_path / "rw", items)
    r = respond(tmp_path / "rw", srv.url, "--retries", "1", "--refusal-mode", "rewrite")
    assert r.exit_code == 0, r.output
    assert srv.requests == 7 + 1 + 1 + 2                                  # a new run folder: no cache; the last item: both attempts
    recs = {x["instruction_id"]: x for x in rows(tmp_path / "rw" / "responses" / "records.jsonl")}
    assert {k: v["source"] for k, v in recs.items()} == {items[0]["id"]: "rewrite", items[1]["id"]: "rewrite", items[2]["id"]: "draft"}
    for it in items[:2]:                                                  # the lead-in is cut
        assert recs[it["id"]]["messages"][1]["content"] == "Sorry. " + refusal_draft(ResponseInput.model_validate(it), 0)
    assert recs[items[2]["id"]]["messages"][1]["content"] == refusal_draft(ResponseInput.model_validate(items[2]), 0)
    assert all(is_refusal(x["messages"][1]["content"]) for x in recs.values())


def test_benign_agent_plan_auto(tmp_path, scripted_server):
    "Benign items end as executed, validated trajectories in agent mode, plan mode and auto mode (with a fallback)."
    items = [quality_row(1, "benign", "Placeholder benign request one."), quality_row(61, "benign", "Placeholder benign request two."),
             quality_row(120, "benign", "Placeholder benign request three [agent-skip].")]
    chain_len = {it["id"]: len(it["argument_plan"]) for it in items}
    srv = scripted_server(roles(items))
    # agent mode: the scripted agent follows the plan; [agent-skip] fails validation
    write_quality(tmp_path / "agent", items)
    r = respond(tmp_path / "agent", srv.url, "--mode", "agent")
    assert r.exit_code == 0, r.output
    recs = {x["instruction_id"]: ResponseRecord.model_validate(x) for x in rows(tmp_path / "agent" / "responses" / "records.jsonl")}
    fails = {x["item_id"]: x for x in rows(tmp_path / "agent" / "responses" / "failures.jsonl")}
    assert set(recs) == {items[0]["id"], items[1]["id"]} and fails[items[2]["id"]]["reason"] == "invalid_trajectory"
    assert fails[items[2]["id"]]["detail"].startswith("agent mode: missing [")
    for iid, rec in recs.items():
        assert rec.mode == "agent" and rec.source == "llm" and rec.validation["ok"]
        assert rec.validation["missing_tools"] == [] and rec.validation["errors_unrecovered"] == [] and not rec.validation["final_is_refusal"]
        check_conversation(rec, chain_len[iid])
    s = json.loads((tmp_path / "agent" / "responses" / "summary.json").read_text())
    assert s["agent_episodes"] == 3 and s["per_tool_match"] and 0 < s["agent_tool_match_rate"] < 1
    followed = [t for t in s["per_tool_match"] if t in items[0]["tools"] and t not in items[2]["tools"]]
    assert followed and all(s["per_tool_match"][t]["match_rate"] == 1.0 for t in followed)

    # plan mode: the plan's calls, connecting text and final answer written by the LLM
    write_quality(tmp_path / "plan", items)
    r = respond(tmp_path / "plan", srv.url, "--mode", "plan")
    assert r.exit_code == 0, r.output
    recs = [ResponseRecord.model_validate(x) for x in rows(tmp_path / "plan" / "responses" / "records.jsonl")]
    assert len(recs) == 3 and not rows(tmp_path / "plan" / "responses" / "failures.jsonl")
    for rec in recs:
        assert rec.mode == "plan" and rec.source == "llm" and rec.validation["ok"]
        check_conversation(rec, chain_len[rec.instruction_id])
        plan = next(it for it in items if it["id"] == rec.instruction_id)["argument_plan"]
        assert [m["tool_calls"][0]["function"]["name"] for m in rec.messages if m.get("tool_calls")] == [s["tool"] for s in plan]
        assert all(m["content"] == "Let me take care of the next step now." for m in rec.messages if m.get("tool_calls"))
    s = json.loads((tmp_path / "plan" / "responses" / "summary.json").read_text())
    assert s["connecting_text"]["written"] == s["connecting_text"]["steps"] == sum(chain_len.values()) and s["plan_links"]["unresolved"] == 0

    # auto: agent first, the plan for the item the agent got wrong
    write_quality(tmp_path / "auto", items)
    r = respond(tmp_path / "auto", srv.url, "--mode", "auto")
    assert r.exit_code == 0, r.output
    recs = {x["instruction_id"]: x for x in rows(tmp_path / "auto" / "responses" / "records.jsonl")}
    assert {k: v["mode"] for k, v in recs.items()} == {items[0]["id"]: "agent", items[1]["id"]: "agent", items[2]["id"]: "plan"}
    assert recs[items[2]["id"]]["validation"]["agent_attempt"]["reason"] == "invalid_trajectory"
    assert json.loads((tmp_path / "auto" / "responses" / "summary.json").read_text())["auto_fallbacks"] == 1

def check_conversation(rec: ResponseRecord, n_steps: int):
    "OpenAI chat format: user first, no system message, tool calls with JSON-string arguments, tool results with ids and names, a final answer."
    m = rec.messages
    assert m[0] == {"role": "user", "content": rec.instruction} and not any(x["role"] == "system" for x in m)
    calls = [c for x in m if x.get("tool_calls") for c in x["tool_calls"]]
    tools = [x for x in m if x["role"] == "tool"]
    assert len(calls) == len(tools) >= n_steps
    for c, t in zip(calls, tools):
        assert c["type"] == "function" and isinstance(c["function"]["arguments"], str) and isinstance(json.loads(c["function"]["arguments"]), dict)
        assert t["tool_call_id"] == c["id"] and t["name"] == c["function"]["name"]
        assert isinstance(t["content"], str) and len(t["content"]) <= 600 and "error" not in json.loads(t["content"])
    assert m[-1]["role"] == "assistant" and not m[-1].get("tool_calls") and m[-1]["content"] and not is_refusal(m[-1]["content"])
    assert rec.validation["n_tool_calls"] == len(calls)


def test_kill_and_rerun_repeats_no_finished_request(tmp_path, scripted_server):
    """SIGKILL the CLI mid-run; the rerun finishes everything and sends exactly the requests whose answers the killed run
    had not stored in the run's LLM cache: none that it had."""
    items = [quality_row(i * 13, "harmful", f"Placeholder harmful request {i}.") for i in range(6)] + \
            [quality_row(i * 17 + 1, "benign", f"Placeholder benign request {i}.") for i in range(4)]
    write_quality(tmp_path, items)
    script = roles(items)
    async def slow(req):                                   # slow enough that the run is killed half way
        await asyncio.sleep(0.3); return script(req)
    srv = scripted_server(slow)
    args = [sys.executable, "-c", "from agentalign.cli import main; main()", "respond", "--out", str(tmp_path), "--backend", "openai",
            "--model", "scripted", "--base-url", srv.url, "--api-key-env", "AGENTALIGN_TEST_NO_KEY", "--mode", "plan", "--concurrency", "2",
            "--no-figures"]
    proc = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "first.err", "w"))
    try:
        for _ in range(2400):                             # (a guard against a child that hangs, not a measurement)
            if cache_entries(tmp_path) >= 4 or proc.poll() is not None: break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL); proc.wait(10)
    srv.stop(); srv.start()                               # the same port; no request of the killed run can arrive any more
    stored, sent_first = cache_entries(tmp_path), srv.requests
    assert stored >= 4 and sent_first >= stored, (tmp_path / "first.err").read_text()[-2000:]
    r = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    total = cache_entries(tmp_path)
    assert total > stored, "the first run was killed before the end, so the rerun had requests left"
    assert srv.requests - sent_first == total - stored                    # each answer not stored asked once, no stored one again
    recs = rows(tmp_path / "responses" / "records.jsonl")
    assert sorted(x["instruction_id"] for x in recs) == sorted(it["id"] for it in items)
    s = json.loads((tmp_path / "responses" / "summary.json").read_text())
    assert s["records"] == 10 and s["failures"] == 0 and s["llm_cache"] == {"hits": stored, "misses": total - stored}


def test_bad_input_is_one_line(tmp_path, scripted_server):
    "No quality records: one clear line, exit 2. A corrupt line: one line naming file and line; the other lines are still processed."
    from typer.testing import CliRunner
    import agentalign.responses  # noqa: F401
    r = CliRunner().invoke(app, ["respond", "--out", str(tmp_path / "empty")])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "quality/records.jsonl: not found" in r.output and "filter" in r.output, r.output
    items = [quality_row(0, "harmful", "Placeholder harmful request."), quality_row(1, "benign", "Placeholder benign request."),
             quality_row(2, "benign", "Not kept.", keep=False)]
    p = write_quality(tmp_path / "run", items, broken_after=1)
    srv = scripted_server(roles(items))
    proc = subprocess.run([sys.executable, "-c", "from agentalign.cli import main; main()", "respond", "--out", str(tmp_path / "run"),
                           "--backend", "openai", "--model", "scripted", "--base-url", srv.url, "--api-key-env", "AGENTALIGN_TEST_NO_KEY",
                           "--mode", "plan", "--no-figures"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    warn = [l for l in proc.stderr.splitlines() if "records.jsonl:2" in l]
    assert len(warn) == 1 and str(p) in warn[0] and "invalid JSON" in warn[0], proc.stderr[-2000:]
    recs = rows(tmp_path / "run" / "responses" / "records.jsonl")
    fails = rows(tmp_path / "run" / "responses" / "failures.jsonl")
    assert sorted(x["instruction_id"] for x in recs) == sorted([items[0]["id"], items[1]["id"]])
    assert [(f["item_id"], f["reason"]) for f in fails] == [("records.jsonl:2", "bad_input")]
    s = json.loads((tmp_path / "run" / "responses" / "summary.json").read_text())
    assert s["input_lines"]["bad_lines"] == 1 and s["input_lines"]["not_kept"] == 1


@pytest.mark.parametrize("name,edit,msg", [
    ("refusals.yaml", lambda d: d.pop("severity"), "severity: Field required"),
    ("refusals.yaml", lambda d: d.update(openings=[]), "openings: List should have at least 1 item after validation, not 0"),
    ("refusals.yaml", lambda d: d["concerns"].pop("doxing"), "concerns: no entry for subcategory doxing"),
    ("refusals.yaml", lambda d: d["reasons"].__setitem__(0, "It is {concern."), "reasons.0: malformed placeholder"),
    ("answers.yaml", lambda d: d["closings"].__setitem__(0, {"text": "x"}), "closings.0: Input should be a valid string"),
    ("answers.yaml", lambda d: d["done"].pop("Search.web_search"), "done: no entry for capability Search.web_search"),
    ("answers.yaml", lambda d: d["openings"].__setitem__(1, "Done {x}."), "openings.1: unknown placeholder {x}"),
])
def test_broken_phrase_file_is_one_line(tmp_path, scripted_server, name, edit, msg):
    "A phrase file with a missing table, an empty list or a malformed entry: `respond` exits 2 with one line naming the file and the entry, before any request."
    data = tmp_path / "data"; (data / "phrases").mkdir(parents=True)
    for p in (REPO / "data").iterdir():
        if p.name != "phrases": (data / p.name).symlink_to(p)
    for p in (REPO / "data" / "phrases").iterdir(): (data / "phrases" / p.name).write_text(p.read_text())
    content = yaml.safe_load((data / "phrases" / name).read_text()); edit(content)
    (data / "phrases" / name).write_text(yaml.safe_dump(content))
    items = [quality_row(0, "harmful", "Placeholder harmful request."), quality_row(1, "benign", "Placeholder benign request.")]
    write_quality(tmp_path / "run", items)
    srv = scripted_server(roles(items))
    r = respond(tmp_path / "run", srv.url, "--mode", "plan", env={"AGENTALIGN_DATA_DIR": str(data)})
    assert r.exit_code == 2 and r.output.count("\n") == 1 and f"{data / 'phrases' / name}: {msg}" in r.output, r.output
    assert srv.requests == 0 and not (tmp_path / "run" / "responses").exists()


def test_config_file_and_options(tmp_path, scripted_server):
    "--config sets the stage and the roles; command-line options win; unknown keys and bad values are one line."
    from typer.testing import CliRunner
    import agentalign.responses  # noqa: F401
    items = [quality_row(3, "benign", "Placeholder benign request.")]
    write_quality(tmp_path, items)
    cfg = tmp_path / "run.toml"
    srv = scripted_server(roles(items))
    cfg.write_text(f'[responses]\nmode = "agent"\ndistractors = 1\n[roles.agent]\nbackend = "openai"\nmodel = "scripted"\n'
                   f'base_url = "{srv.url}"\napi_key_env = "AGENTALIGN_TEST_NO_KEY"\n[roles.judge]\nmodel = "another stage\'s role"\n'
                   f'[quality]\nmin_chars = 40\n')
    r = CliRunner().invoke(app, ["respond", "--out", str(tmp_path), "--config", str(cfg), "--mode", "plan", "--no-figures"])
    assert r.exit_code == 0, r.output
    assert srv.requests > 0 and all(e["body"]["model"] == "scripted" for e in srv.completions)
    stage = json.loads((tmp_path / "responses" / "config.json").read_text())["config"]
    assert stage["mode"] == "plan" and stage["distractors"] == 1 and stage["agent"]["model"] == "scripted" and stage["refuser"]["model"] == "embedded"
    rec = rows(tmp_path / "responses" / "records.jsonl")[0]
    assert rec["mode"] == "plan" and len(rec["tools"]) == len(set(items[0]["tools"])) + 1 and rec["responder"] == "openai:scripted"
    bad = tmp_path / "bad.toml"
    bad.write_text('[responses]\nmodee = "plan"\n')
    r = CliRunner().invoke(app, ["respond", "--out", str(tmp_path), "--config", str(bad)])
    assert r.exit_code == 2 and "modee: unknown key" in r.output and r.output.count("\n") == 1, r.output
    r = CliRunner().invoke(app, ["respond", "--out", str(tmp_path), "--mode", "magic"])
    assert r.exit_code == 2 and "mode" in r.output and r.output.count("\n") == 1, r.output


def test_embedded_model_rewrite_and_plan(tmp_path):
    """The embedded 135M model: rewrite-mode refusals and plan-mode trajectories always end as records, each either
    the model's faithful rewrite of the draft or the draft itself."""
    items = [quality_row(0, "harmful", "Placeholder harmful request for the embedded model."),
             quality_row(1, "benign", "Placeholder benign request for the embedded model.")]
    write_quality(tmp_path, items)
    from agentalign.responses import run_responses, ResponsesConfig
    s = run_responses(tmp_path, ResponsesConfig(mode="plan", refusal_mode="rewrite", answer_mode="rewrite", connecting_text=False, retries=0,
                                                 distractors=0, max_tokens=48, timeout=900, figures=True), progress=False)
    assert s["records"] == 2 and s["failures"] == 0, s
    recs = {x["label"]: x for x in rows(tmp_path / "responses" / "records.jsonl")}
    refusal, draft = recs["harmful"]["messages"][1]["content"], refusal_draft(ResponseInput.model_validate(items[0]), 0)
    assert is_refusal(refusal) and recs["harmful"]["source"] != "llm"
    assert refusal == draft if recs["harmful"]["source"] == "draft" else (refusal != draft and rewrite_problem(draft, refusal) is None)
    assert recs["benign"]["source"] != "llm" and recs["benign"]["validation"]["ok"] and recs["benign"]["validation"]["key_facts"]
    final = recs["benign"]["messages"][-1]["content"]
    assert all(f.lower() in final.lower() for f in recs["benign"]["validation"]["key_facts"])
    assert (tmp_path / "figures" / "responses.png").exists()
