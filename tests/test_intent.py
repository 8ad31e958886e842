"""Checks of the intent stage that can fail: the decision score on a stub model whose logits we control (a
refusal-preferring and a tool-preferring request, AUROC and operating point exact), the batched cached computation
against plain forward passes, the AgentHarm first turn as inspect's provider renders it, the probe on synthetic
features, the stage's accounting and its resume after a kill, and bad input as one line."""
import json, math
from pathlib import Path
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import agentalign.intent as intent
from agentalign.core import app, read_json, read_jsonl
from agentalign.intent import (REFUSAL_OPENINGS, TOOL_OPENING, IntentConfig, agentharm_requests, first_turn,
                               generation_prompt, opening_ids, opening_logprobs, probe_cv, probe_transfer, run_intent)
from agentalign.models import training_template

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "agentharm"     # made-up behaviors in AgentHarm's format
NAMES = [TOOL_OPENING, *REFUSAL_OPENINGS]

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from agentalign.models import tiny_model_folder
    return tiny_model_folder(tmp_path_factory.mktemp("m") / "tiny-chatml")

@pytest.fixture(scope="module")
def tok(tiny):
    from agentalign.models import load_model
    return load_model(str(tiny), "cpu")[1]

# ---- a stub causal LM whose next-token logits are a table --------------------------------------------------------
class StubCache:
    "The tokens seen so far, cut and repeated like transformers' cache."
    def __init__(self, ids): self.ids = ids
    def crop(self, k):
        assert k < 0; self.ids = self.ids[:, :k]
    def batch_repeat_interleave(self, n): self.ids = self.ids.repeat_interleave(n, 0)

class Out:
    def __init__(self, **kw): self.__dict__.update(kw)

class StubLM(torch.nn.Module):
    """Logits after token `p` are `table[p]`, plus `per_marker[p]` times the number of `marker` tokens seen: a request
    with markers leans towards what `per_marker` favours. Hidden state (one layer): [marker count, 1]."""
    def __init__(self, vocab, table, per_marker, marker):
        super().__init__()
        self.vocab, self.table, self.per_marker, self.marker = vocab, table, per_marker, marker
        self.config = Out(num_hidden_layers=1)
        self.device = torch.device("cpu")
        self.calls = 0

    def row(self, prev: int, markers: int) -> torch.Tensor:
        z = torch.zeros(self.vocab)
        for t, v in self.table.get(prev, {}).items(): z[t] += v
        for t, v in self.per_marker.get(prev, {}).items(): z[t] += v * markers
        return z

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=False, logits_to_keep=0, output_hidden_states=False):
        self.calls += 1
        seen = input_ids if cache is None else torch.cat([cache.ids, input_ids], 1)
        m = (seen == self.marker).sum(1)
        keep = input_ids[:, -logits_to_keep:] if logits_to_keep else input_ids
        logits = torch.stack([torch.stack([self.row(int(p), int(m[b])) for p in keep[b]]) for b in range(len(keep))])
        h = torch.stack([m.float(), torch.ones_like(m, dtype=torch.float)], 1)[:, None].expand(-1, input_ids.shape[1], -1)
        if cache is None: cache = StubCache(seen)
        else: cache.ids = seen                                # like transformers: the cache passed in grows
        return Out(logits=logits, cache=cache, hidden_states=(h, h))

def direct_logp(stub: StubLM, prompt_last: int, markers: int, opening: list[int]) -> float:
    "log p(opening) read straight from the table, token by token."
    out, prev = 0.0, prompt_last
    for t in opening:
        out += float(stub.row(prev, markers).log_softmax(-1)[t]); prev = t
    return out

A = 9.0   # the tool opening's first-token logit after the prompt: the operating point falls between 2 and 3 markers

@pytest.fixture(scope="module")
def setup(tok):
    "The stub (tool opening after `\\n` worth `a`; each marker adds 2 to the refusal's first token `I`), and its marker id."
    ops = opening_ids(tok, generation_prompt(tok, training_template(tok)), NAMES)
    marker = tok(" zebra", add_special_tokens=False)["input_ids"]
    assert len(marker) == 1
    nl, tool, i_ = tok("\n", add_special_tokens=False)["input_ids"][0], ops[0], ops[1][0]
    table = {nl: {tool[0]: A}}
    for o in ops:                                         # every opening, once begun, is likely to go on
        for a, b in zip(o, o[1:]): table.setdefault(a, {})[b] = 10.0
    return StubLM(len(tok), table, {nl: {i_: 2.0}}, marker[0]), ops, nl

def test_stub_scores_are_the_direct_computation(tok, setup):
    stub, ops, nl = setup
    tmpl = training_template(tok)
    texts = ["Please zebra zebra help.", "Hi.", "A much longer request about zebra things that goes on and on for a while."]
    seqs = [tok(first_turn(tok, tmpl, {"messages": [{"role": "user", "content": t}], "tools": []}), add_special_tokens=False)["input_ids"] for t in texts]
    assert all(s[-1] == nl for s in seqs)
    lp, hid = opening_logprobs(stub, seqs, ops, [1], tok.pad_token_id)
    for i, t in enumerate(texts):
        m = t.count("zebra")
        assert hid[i, 0, 0] == m
        for k, o in enumerate(ops): assert lp[i, k] == pytest.approx(direct_logp(stub, nl, m, o), abs=1e-5)

def write_requests(path: Path, markers: dict) -> Path:
    "A request set: one request per (label, marker count), offering `send_gmail`."
    rows = [{"id": f"{lab[0]}{i}", "label": lab, "category": f"c{i}", "text": "Use send_gmail to write to Bob." + " zebra" * m}
            for lab, ms in markers.items() for i, m in enumerate(ms)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path

def stage_with_stub(tmp_path, monkeypatch, tiny, tok, stub, markers, **cfg):
    monkeypatch.setattr("agentalign.models.load_model", lambda model, device=None: (stub, tok))
    req = write_requests(tmp_path / "req.jsonl", markers)
    s = run_intent(tmp_path / "run", IntentConfig(model=str(tiny), label="stub", sets=["ours"], requests=str(req), layers=[1], figures=False, **cfg))
    return s, read_json(Path(s["folder"]) / "metrics.json")["sets"]["ours"], {r["request_id"]: r for r in read_jsonl(Path(s["folder"]) / "records.jsonl")}

def test_refusal_and_tool_preferring_requests_auroc_and_operating_point_exact(tmp_path, monkeypatch, tiny, tok, setup):
    stub, ops, nl = setup
    s = lambda m: direct_logp(stub, nl, m, ops[0]) - float(torch.logsumexp(torch.tensor([direct_logp(stub, nl, m, o) for o in ops[1:]]), 0))
    assert s(0) > 0 and s(2) > 0 > s(3)            # the table's operating point lies between 2 and 3 markers
    summary, m, recs = stage_with_stub(tmp_path, monkeypatch, tiny, tok, stub, {"harmful": [1, 3, 4, 5], "benign": [0, 0, 1, 2]})
    assert recs["h1"]["refuses"] and not recs["b0"]["refuses"]              # refusal-preferring / tool-preferring
    assert recs["h1"]["score"] == pytest.approx(s(3), abs=1e-5) and recs["b0"]["p_act"] == pytest.approx(1 / (1 + math.exp(-s(0))), abs=1e-6)
    assert recs["b0"]["tools"] == ["send_gmail"]
    assert m["auroc"] == 14.5 / 16                  # harmful 1 ties benign 1 once and is below benign 2
    assert (m["refused_harmful"], m["refused_benign"]) == (3, 0) and m["refusal_gap"] == 0.75
    assert m["fisher_p"] == pytest.approx(1 / 7)     # two-sided Fisher exact of [[3, 1], [0, 4]]
    assert summary["ours_auroc"] == 14.5 / 16 and summary["records"] == 8

def test_a_model_that_refuses_everything_keeps_its_ranking(tmp_path, monkeypatch, tiny, tok, setup):
    stub, ops, nl = setup
    stub = StubLM(stub.vocab, {**stub.table, nl: {ops[0][0]: -20.0}}, stub.per_marker, stub.marker)
    _, m, recs = stage_with_stub(tmp_path, monkeypatch, tiny, tok, stub, {"harmful": [1, 3, 4, 5], "benign": [0, 0, 1, 2]})
    assert all(r["refuses"] for r in recs.values())
    assert (m["refusal_harmful"], m["refusal_benign"], m["refusal_gap"], m["fisher_p"]) == (1.0, 1.0, 0.0, 1.0)
    assert m["auroc"] == 14.5 / 16

def test_batched_cached_logprobs_match_plain_forward_passes(tiny, tok):
    from agentalign.models import load_model
    model = load_model(str(tiny), "cpu")[0]
    tmpl = training_template(tok)
    ops = opening_ids(tok, generation_prompt(tok, tmpl), NAMES)
    reqs = agentharm_requests(FIXTURE)[0][:3]
    seqs = [tok(first_turn(tok, tmpl, r), add_special_tokens=False)["input_ids"] for r in reqs]
    lp, hid = opening_logprobs(model, seqs, ops, [0, 2], tok.pad_token_id)
    for i, s in enumerate(seqs):
        for k, o in enumerate(ops):
            with torch.inference_mode(): out = model(input_ids=torch.tensor([s + o]), output_hidden_states=True)
            lsm = out.logits[0].float().log_softmax(-1)
            assert lp[i, k] == pytest.approx(sum(float(lsm[len(s) - 1 + j, t]) for j, t in enumerate(o)), abs=1e-4)
        assert np.allclose(hid[i, 1], out.hidden_states[2][0, len(s) - 1].numpy(), atol=1e-4)

def test_agentharm_first_turn_is_what_the_scoring_provider_renders(tiny, tok):
    "The AgentHarm first turn equals inspect's HF provider (as `agentalign agentharm` runs it) on inspect's messages and tools."
    from inspect_ai.model import ChatMessageSystem, ChatMessageUser
    from inspect_ai.tool._tool_util import tool_to_tool_info
    from inspect_evals.agentharm.benchmark import benign_tools, harmful_tools
    from inspect_evals.agentharm.prompts import get_jailbreak_template, get_system_prompt
    from agentalign.agentharm.provider import make_hf_provider, model_spec
    from agentalign.agentharm.tasks import load_behaviors
    spec = model_spec(str(tiny))
    api = make_hf_provider()(model_name=spec["model"].split("/", 1)[1], **spec["model_args"])
    reqs = {r["id"]: r for r in agentharm_requests(FIXTURE)[0]}
    for task, mod in (("harmful", harmful_tools), ("benign", benign_tools)):
        for b in load_behaviors(FIXTURE / "benchmark" / f"{task}_behaviors_validation.json", task):
            msgs = [ChatMessageSystem(content=get_system_prompt("default", "standard")),
                    ChatMessageUser(content=get_jailbreak_template("empty").format(prompt=b["prompt"]))]
            tools = [tool_to_tool_info(getattr(mod, n)()) for n in b["target_functions"]]
            assert first_turn(tok, training_template(tok), reqs[f"agentharm:{task}:{b['id']}"]) == api.hf_chat(msgs, tools)

# ---- the probe -----------------------------------------------------------------------------------------------------
def test_probe_separable_and_inseparable_features():
    g = np.random.default_rng(1)
    y = np.array([True, False] * 32); groups = np.repeat(np.arange(8), 8)
    X = g.normal(size=(64, 8)); X[:, 3] += 10 * y
    assert probe_cv(X, y, groups)[0] == 1.0 and probe_transfer(X[:32], y[:32], X[32:], y[32:])[0] == 1.0
    a, p = probe_cv(g.normal(size=(64, 24)), y, groups)
    assert 0.25 < a < 0.75 and not np.isnan(p).any()
    assert probe_cv(X, np.ones(64, bool), groups) == (None, None) and probe_transfer(X, np.zeros(64, bool), X, y) == (None, None)

def test_probe_reads_the_stub_hidden_state(tmp_path, monkeypatch, tiny, tok, setup):
    "The stub's hidden state is the marker count: the probe separates sets whose decision ties (every request refused)."
    stub, ops, nl = setup
    stub = StubLM(stub.vocab, {**stub.table, nl: {ops[0][0]: -20.0}}, {}, stub.marker)    # the decision ignores the markers
    markers = {"harmful": [3, 4, 3, 4, 3, 4, 3, 4], "benign": [0, 1, 0, 1, 0, 1, 0, 1]}
    s, m, recs = stage_with_stub(tmp_path, monkeypatch, tiny, tok, stub, markers)
    assert m["auroc"] == 0.5 and s["probe_ours_cv"] == 1.0 and s["probe_layer"] == 1
    assert all(r["probe_p"] > 0.5 for k, r in recs.items() if k[0] == "h") and all(r["probe_p"] < 0.5 for k, r in recs.items() if k[0] == "b")

# ---- the stage: accounting, resume, bad input ----------------------------------------------------------------------
def base_cfg(tiny, **kw):
    return IntentConfig(model=str(tiny), label="tiny", data_dir=str(FIXTURE), limit=4, batch_size=2, layers=[1, 2], figures=False, **kw)

def test_every_request_is_a_record_or_a_failure(tmp_path, tiny, tok):
    reqs, _, _ = intent.request_sets(base_cfg(tiny))
    lengths = sorted(len(tok(first_turn(tok, training_template(tok), r), add_special_tokens=False)["input_ids"]) for r in reqs)
    cut = lengths[len(lengths) // 2]
    s = run_intent(tmp_path, base_cfg(tiny, max_length=cut))
    fails = read_jsonl(Path(s["folder"]) / "failures.jsonl")
    assert s["records"] == sum(l <= cut for l in lengths) and len(fails) == sum(l > cut for l in lengths) > 0
    assert {f["reason"] for f in fails} == {"over_length"} and s["records"] + s["failures"] == len(reqs) == 16

def test_resume_after_a_kill_scores_only_the_rest(tmp_path, monkeypatch, tiny):
    real = intent.opening_logprobs
    seen = []
    class Killed(BaseException): pass
    def dies_after_two(model, seqs, *a, **k):
        if len(seen) == 2: raise Killed()
        seen.append(len(seqs)); return real(model, seqs, *a, **k)
    monkeypatch.setattr(intent, "opening_logprobs", dies_after_two)
    with pytest.raises(Killed): run_intent(tmp_path / "run", base_cfg(tiny))
    st = tmp_path / "run" / "intent" / "tiny"
    assert len(read_jsonl(st / "scores.jsonl")) == 4 and not (st / "summary.json").exists()
    counted = []
    monkeypatch.setattr(intent, "opening_logprobs", lambda model, seqs, *a, **k: counted.append(len(seqs)) or real(model, seqs, *a, **k))
    s = run_intent(tmp_path / "run", base_cfg(tiny))
    assert sum(counted) == 16 - 4 and s["records"] == 16
    counted.clear()
    run_intent(tmp_path / "run", base_cfg(tiny))
    assert counted == []                                             # finished: nothing scored again
    monkeypatch.setattr(intent, "opening_logprobs", real)
    fresh = run_intent(tmp_path / "fresh", base_cfg(tiny))
    a = {r["id"]: r for r in read_jsonl(st / "records.jsonl")}
    b = {r["id"]: r for r in read_jsonl(Path(fresh["folder"]) / "records.jsonl")}
    assert a.keys() == b.keys() and all(a[i]["score"] == pytest.approx(b[i]["score"], abs=1e-4) for i in a)

def cli(*args):
    return CliRunner().invoke(app, ["intent", *map(str, args)])

def test_bad_input_is_one_line(tmp_path, tiny):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "Use send_gmail.", "label": "benign"}\n{"text": \n{"text": "x", "label": "harmful"}\n')
    noweights = tmp_path / "noweights"; noweights.mkdir(); (noweights / "config.json").write_text("{}")
    for args, msg in [(["--model", tmp_path / "nope"], "no such local folder"),
                      (["--model", noweights], "has no weights"),
                      (["--model", tiny, "--requests", bad, "--sets", "ours"], "bad.jsonl:2: invalid JSON"),
                      (["--model", tiny, "--data-dir", tmp_path / "none"], "AgentHarm folder"),
                      (["--model", tiny, "--device", "tpu"], "device:")]:
        r = cli("--out", tmp_path / "run", *args)
        assert r.exit_code == 2, r.output
        err = [l for l in r.output.splitlines() if l.startswith("error:")]
        assert len(err) == 1 and msg in err[0], r.output

def test_no_agentharm_folder_skips_that_set_with_a_note(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("AGENTALIGN_AGENTHARM_DIR", "")
    r = cli("--out", tmp_path, "--model", tiny, "--limit", "2", "--layers", "1", "--no-figures")
    assert r.exit_code == 0, r.output
    assert "note: no AgentHarm folder" in r.output and "4 requests scored, 0 failures" in r.output
    m = read_json(tmp_path / "intent" / "tiny-chatml" / "metrics.json")
    assert list(m["sets"]) == ["ours"] and "agentharm" in m["skipped"]
    r = cli("--out", tmp_path / "other", "--model", tiny, "--sets", "agentharm")
    assert r.exit_code == 2 and "no requests to score (no AgentHarm folder" in r.output

def test_settings_come_from_the_one_settings_path(tmp_path, tiny):
    conf = tmp_path / "c.toml"
    conf.write_text('[pipeline]\nbase_model = "/from/pipeline"\n[intent]\nbatch_size = 3\nlayers = [2]\n')
    r = cli("--out", tmp_path, "--config", conf, "--batch-size", "5", "--show-settings")
    got = json.loads(r.output)
    assert (got["model"], got["batch_size"], got["layers"]) == ("/from/pipeline", 5, [2])
    conf.write_text("[intent]\nbatch = 3\n")
    r = cli("--out", tmp_path, "--config", conf)
    assert r.exit_code == 2 and "batch: unknown key" in r.output
