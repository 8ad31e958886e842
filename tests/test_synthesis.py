"""Synthesis stages (chains, instructions) end to end: the embedded model offline, and the scripted OpenAI-compatible
server of `conftest.py` playing the writer (structured output, concurrency, kill and resume, settings, bad input).

The writer answers with JSON valid for the requested schema, after `delay` seconds, and counts the requests in flight.
For rewrite requests it rewords the draft, except for one request in three, whose answer drops the draft's values
(the stage must then keep the draft). The stage commands run in a subprocess (`agentalign ...`), so that a run can be
killed; what was sent is counted at the server, what was kept in the run's LLM cache."""
import asyncio, hashlib, json, os, re, signal, subprocess, sys, time
from pathlib import Path

import pytest
from conftest import free_port
from agentalign.llm.base import ResponseCache

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

# ------------------------------------------------------------------------------------------------ scripted writer
def answer(req) -> dict:
    "A schema-valid answer to a chain, free-writing or rewrite request."
    props = req.response_schema.get("properties", {})
    user = next((m.get("content") or "" for m in req.messages if m.get("role") == "user"), "")
    key = hashlib.sha256(json.dumps(req.messages, sort_keys=True).encode()).hexdigest()
    if "request" in props:                              # rewrite: reword the draft, or (1 in 3) lose its values
        draft = user.split("Request:\n", 1)[1]          # the draft, its values masked as [1], [2], ...
        if int(key, 16) % 3 == 0: return {"request": "Please do the usual thing for me, you know what I mean, thanks a lot."}
        return {"request": "Hey, a favour: " + draft.replace("First,", "To begin,").replace("Step one:", "To begin,")}
    if "instructions" in props:
        n = int(re.search(r"Write (\d+) request", user).group(1))
        vals = [v for line in re.findall(r"^\s+state: (.*)$", user, re.M) for v in re.findall(r"= (\"[^\"]*\"|[^;]+)", line)]
        stated = " ".join(v.strip().strip('"') for v in vals)
        return {"instructions": [f"Scripted request {i} ({key[:8]}): please take care of this for me, using {stated or 'the tools'}." for i in range(n)]}
    enum = props["chains"]["items"]["properties"]["steps"]["items"]["enum"]
    h = int(key, 16)
    chains = [{"steps": [enum[(h >> (4 * j + i)) % len(enum)] for j in range(1 + (h >> i) % 3)], "explanation": f"Scripted chain {i}."}
              for i in range(2)]
    return {"chains": chains + [{"steps": [enum[0], enum[0]], "explanation": "degenerate on purpose"}]}   # schema-valid, semantically not


class Writer:
    "The scripted writer as a `ScriptedServer` script: `answer` after `delay` seconds; `most` is the most requests in flight."
    def __init__(self, delay: float = 0.0): self.delay, self.inflight, self.most = delay, 0, 0
    async def __call__(self, req):
        self.inflight += 1; self.most = max(self.most, self.inflight)
        try:
            await asyncio.sleep(self.delay)
            return answer(req)
        finally: self.inflight -= 1


@pytest.fixture
def writer(scripted_server):
    "A scripted writer server (0.4 s per answer) and its script."
    w = Writer(delay=0.4)
    return scripted_server(w), w

def received(srv) -> list[dict]:
    "The bodies of the complete requests the server received (a request cut short by a killed client has no messages)."
    return [e["body"] for e in srv.completions if isinstance(e["body"], dict) and "messages" in e["body"]]

def schemas(srv) -> set:
    "The structured-output schema names of the requests (`None`: a request without a JSON schema)."
    return {(b.get("response_format") or {}).get("json_schema", {}).get("name") for b in received(srv)}

def messages(srv) -> set:
    "The distinct message lists of the requests."
    return {json.dumps(b["messages"], sort_keys=True) for b in received(srv)}

AGENTALIGN = [PY, "-c", "from agentalign.cli import main; main()"]

def cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*AGENTALIGN, *args], env={**ENV, "OPENAI_API_KEY": "sk-test-not-a-secret", **kw.pop("env", {})},
                          capture_output=True, text=True, cwd=REPO, timeout=kw.pop("timeout", 300), **kw)

def rows(p: Path) -> list[dict]:
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]

def cached(run: Path) -> int:
    "How many answers the run's LLM cache holds."
    if not (run / "cache.sqlite").exists(): return 0
    c = ResponseCache(run / "cache.sqlite")
    try: return len(c)
    finally: c.close()

# ------------------------------------------------------------------------------------------------ tests
def test_instructions_openai_structured_concurrency_resume(writer, tmp_path):
    """Free mode against an endpoint: structured output, concurrency bound, SIGKILL then a rerun that sends only what
    the run's cache lacks, every slot a record, figures in the run folder (not the package's), no key in anything written."""
    srv, w = writer
    run = tmp_path / "run"
    figs = tmp_path / "doc-figures"                  # the package's documentation figures folder: must stay untouched
    env = {"AGENTALIGN_FIGURES_DIR": str(figs)}
    args = ["instructions", "--out", str(run), "--backend", "openai", "--model", "scripted", "--base-url", srv.url,
            "--limit", "6", "--counts", "1:1:1", "--concurrency", "3", "--seed", "7", "--mode", "free", "--api-key-env", "OPENAI_API_KEY"]
    # first run: killed once the run's cache holds a few answers, before it holds all 18
    proc = subprocess.Popen([*AGENTALIGN, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "first.err", "w"),
                            env={**ENV, "OPENAI_API_KEY": "sk-test-not-a-secret", **env})
    for _ in range(2400):
        if cached(run) >= 3 or proc.poll() is not None: break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL); proc.wait(10)
    kept, first = cached(run), srv.settle()
    assert 3 <= kept < 18, f"the first run should have stored some, not all, answers before the kill ({kept})"

    # rerun to completion: the cached answers are not asked again
    r = cli(*args, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert srv.requests - first == 18 - kept, f"{srv.requests - first} requests sent by the rerun, {18 - kept} answers missing"
    assert len(messages(srv)) == 18 and cached(run) == 18      # 6 chains x 3 kinds, each request distinct
    assert schemas(srv) == {"instructions"}                     # every request asked for structured output through a JSON schema
    assert 2 <= w.most <= 3                                     # concurrency honoured, and it did overlap

    st = run / "instructions"
    recs, fails = rows(st / "records.jsonl"), rows(st / "failures.jsonl")
    summ = json.loads((st / "summary.json").read_text())
    assert summ["requested"] == 18 and summ["produced"] == len(recs) == 18 and summ["slot_failures"] == 0 and fails == []
    assert summ["mode"] == "free" and summ["sources"] == {"llm": 18, "rewrite": 0, "draft": 0}
    assert summ["cached"] == kept
    for k in ("chain_id", "category", "subcategory", "tools", "argument_plan", "kind", "instruction", "generator", "prompt_version", "seed", "source", "draft"):
        assert all(k in x for x in recs), k
    assert len({x["id"] for x in recs}) == 18 and all(x["id"].endswith(("#0",)) for x in recs)
    assert {x["kind"] for x in recs} == {"harmful", "benign", "borderline"} and {x["source"] for x in recs} == {"llm"}
    assert {x["generator"] for x in recs} == {"openai:scripted"} and {x["seed"] for x in recs} == {7}
    assert min(x["plan_coverage"] for x in recs) == 1.0          # the scripted writer states every planned value
    for f in ("run.json", "instructions/config.json", "instructions/summary.json", "instructions/records.jsonl", "first.err"):
        assert "sk-test" not in ((run / f) if f != "first.err" else (tmp_path / f)).read_text(), f
    assert sorted(p.name for p in (run / "figures").iterdir()) == ["instructions_length.png", "instructions_per_category.png", "instructions_tool_coverage.png"]
    assert not figs.exists() or not any(figs.iterdir())

    # a third run (figures off: not a result-changing setting) is served entirely from the cache
    n_before = srv.requests
    r = cli(*args, "--no-figures")
    assert r.returncode == 0, r.stderr[-2000:]
    assert srv.requests == n_before
    assert json.loads((st / "summary.json").read_text())["cached"] == 18

def test_instructions_rewrite_mode_sources_and_accounting(writer, tmp_path):
    """Rewrite mode: one request per slot, all with the same rewrite schema; a rewrite that keeps the plan's values
    is kept (`source: rewrite`), one that loses them falls back to its draft (`source: draft`); every slot a record."""
    srv, _ = writer
    run = tmp_path / "run"
    r = cli("instructions", "--out", str(run), "--backend", "openai", "--model", "scripted", "--base-url", srv.url, "--limit", "8",
            "--counts", "1:1:1", "--concurrency", "8", "--mode", "rewrite", "--no-figures")
    assert r.returncode == 0, r.stderr[-3000:]
    assert srv.requests == 24 and schemas(srv) == {"rewrite"}
    st = run / "instructions"
    recs, summ = rows(st / "records.jsonl"), json.loads((st / "summary.json").read_text())
    assert len(recs) == summ["produced"] == summ["requested"] == 24 and not (st / "failures.jsonl").read_text().strip()
    src = summ["sources"]
    assert src["llm"] == 0 and src["rewrite"] + src["draft"] == 24 and src["rewrite"] >= 8 and src["draft"] >= 3
    fb = summ["rewrite_fallbacks"]
    assert set(fb) <= {"lost_values", "lost_intent", "balanced"} and sum(fb.values()) == src["draft"] and fb.get("lost_values", 0) >= 1
    shares = {k: summ["per_kind"][k]["sources"].get("rewrite", 0) for k in ("harmful", "benign", "borderline")}
    assert max(shares.values()) - min(shares.values()) <= 1, shares                # the same share of rewrites in every kind
    assert not any("[1]" in x["instruction"] for x in recs)                 # placeholders put back
    assert summ["rewrite_share"] == round(src["rewrite"] / 24, 4)
    for x in recs:
        assert x["draft"] and x["source"] in ("rewrite", "draft")
        assert (x["instruction"] == x["draft"]) == (x["source"] == "draft")
        assert x["plan_coverage"] == 1.0                                    # drafts state every value; kept rewrites too
        if x["source"] == "rewrite": assert x["instruction"].startswith("Hey, a favour: ")
    for k in ("harmful", "benign", "borderline"): assert summ["per_kind"][k]["produced"] == 8

def test_instructions_other_settings_refused_lock_and_overwrite(writer, tmp_path):
    srv, _ = writer
    run = tmp_path / "run"
    base = ["instructions", "--out", str(run), "--backend", "openai", "--model", "scripted", "--base-url", srv.url, "--counts", "1:0:0", "--no-figures"]
    r = cli(*base, "--limit", "3", "--seed", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    before = (run / "instructions" / "records.jsonl").read_text()
    assert len(rows(run / "instructions" / "records.jsonl")) == 3
    r = cli(*base, "--limit", "2", "--seed", "1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "other settings" in r.stderr and "seed 0 -> 1" in r.stderr, r.stderr
    assert (run / "instructions" / "records.jsonl").read_text() == before            # nothing replaced
    from agentalign.core import RunDir
    with RunDir(run).lock("instructions"):                                            # another writer holds the stage
        r = cli(*base, "--limit", "3", "--seed", "0")
    assert r.returncode == 2 and "being written by another process" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cli(*base, "--limit", "2", "--seed", "1", "--overwrite")
    assert r.returncode == 0, r.stderr[-2000:]
    recs = rows(run / "instructions" / "records.jsonl")
    assert len(recs) == 2 and {x["seed"] for x in recs} == {1}

def test_instructions_config_file_and_all_failed(tmp_path):
    """A config file sets stage fields and the writer role; command-line options win. A writer that cannot be reached
    is one line before any request (the endpoint probe), exit status 2, also after a rerun, and nothing is recorded as done."""
    run, conf = tmp_path / "run", tmp_path / "conf.toml"
    dead = f"http://127.0.0.1:{free_port()}/v1"                                       # nothing listens there
    conf.write_text(f'[instructions]\ncounts = "1:1:0"\nlimit = 3\nmode = "rewrite"\nfigures = false\n'
                    f'[roles.writer]\nbackend = "openai"\nmodel = "nobody"\nbase_url = "{dead}"\nmax_retries = 0\n')
    for _ in range(2):
        r = cli("instructions", "--out", str(run), "--config", str(conf), "--limit", "2")
        last = r.stderr.strip().splitlines()[-1]                                       # (after the progress bar)
        assert r.returncode == 2 and last.startswith(f"error: instruction writer at {dead} (model nobody): no answer from the endpoint (connection_error"), r.stderr[-2000:]
        assert sum(l.startswith("error:") for l in r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
        assert not any((run / "instructions" / f).exists() for f in ("summary.json", "records.jsonl", "done.json"))
    cfg = json.loads((run / "instructions" / "config.json").read_text())["config"]
    assert (cfg["limit"], cfg["counts"], cfg["mode"], cfg["writer"]["model"], cfg["writer"]["max_retries"]) == (2, {"harmful": 1, "benign": 1, "borderline": 0}, "rewrite", "nobody", 0)

def test_cli_errors_are_one_line(tmp_path):
    folder = tmp_path / "chains.jsonl"; folder.mkdir()
    binary = tmp_path / "bin.jsonl"; binary.write_bytes(b'{"id": "\xff\xfe"}\n')
    badconf = tmp_path / "bad.toml"; badconf.write_text('[instructions]\ncountz = "1:1:1"\n')
    badrole = tmp_path / "role.yaml"; badrole.write_text('roles:\n  writer:\n    modle: x\n')
    out = ["--out", str(tmp_path / "r")]
    for args, msg in [(["instructions", *out, "--counts", "1:2"], "H:B:L"),
                      (["instructions", *out, "--limit", "0"], "--limit"),
                      (["instructions", *out, "--max-tokens", "0"], "--max-tokens"),
                      (["instructions", *out, "--max-tokens", "-5"], "--max-tokens"),
                      (["instructions", *out, "--temperature", "-1"], "--temperature"),
                      (["instructions", *out, "--mode", "wild"], "mode"),
                      (["instructions", *out, "--chains", str(folder)], "not a file"),
                      (["instructions", *out, "--chains", str(binary)], "not a UTF-8 text file"),
                      (["instructions", *out, "--chains", str(tmp_path / "missing.jsonl")], "not found"),
                      (["instructions", *out, "--chains", "merged"], "agentalign chains"),
                      (["instructions", *out, "--config", str(badconf)], "countz: unknown key"),
                      (["instructions", *out, "--config", str(badrole)], "modle"),
                      (["instructions", *out, "--config", str(tmp_path / "none.toml")], "not found"),
                      (["instructions", *out, "--backend", "local", "--base-url", "http://127.0.0.1:9/v1"], "writer: base_url only applies to backend openai"),
                      (["chains", *out, "--backend", "nope"], "writer.backend: Input should be 'local' or 'openai'")]:
        r = cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, (args, r.stderr)

def _agentharm():
    from agentalign.core import agentharm_dir
    return agentharm_dir()

@pytest.mark.skipif(_agentharm() is None, reason="no AgentHarm copy (AGENTALIGN_AGENTHARM_DIR or ../shared/agentharm-validation) to check prompts against")
def test_generated_prompts_have_no_agentharm_text():
    from agentalign.taxonomy import load_taxonomy
    from agentalign.chains import curated_chains, instantiate, chain_request
    from agentalign.decontamination import load_decontaminator, load_behavior_prompts
    from agentalign.instructions import instruction_request, sample_style, KINDS
    from agentalign.drafts import draft_for, rewrite_request
    dc, note = load_decontaminator(required=True)
    tax = load_taxonomy()
    assert all(dc.hits(p) for p in load_behavior_prompts(dc.source).values())     # the detector does detect the benchmark
    n = 0
    for c in curated_chains(tax):
        inst = instantiate(c, tax, 0)
        for k in KINDS:
            req, _ = instruction_request(inst, k, 3, 0, tax, dc)                 # raises on overlap
            n += all(dc.is_clean(m["content"]) for m in req.messages)
            for i in range(2):                                                   # rewrite mode: drafts and their prompts
                rq = rewrite_request("x", draft_for(inst, k, i, 0, tax)[0], sample_style(0, inst.id, i), 0)
                n += all(dc.is_clean(m["content"]) for m in rq.messages)
    assert n == 240 * 3 * 3
    for cat, sub in tax.subcategories:
        req = chain_request(tax, cat, sub, 3, 0, 3, dc)
        assert all(dc.is_clean(m["content"]) for m in req.messages)

def test_embedded_model_writes_in_rewrite_mode_by_default():
    """The local backend (the embedded 135M model) drafts and rewrites unless told otherwise; an endpoint writes freely.
    The embedded model's rewrite run itself is checked on the tiny preset's run (tests/test_pipeline.py)."""
    from agentalign.instructions import InstructionsConfig, resolve_mode
    assert resolve_mode(InstructionsConfig()) == "rewrite"
    assert resolve_mode(InstructionsConfig(writer={"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1"})) == "free"

def test_chains_openai_and_review_round_trip(writer, tmp_path):
    srv, w = writer
    run = tmp_path / "run"
    r = cli("chains", "--out", str(run), "--backend", "openai", "--model", "scripted", "--base-url", srv.url, "--limit", "3",
            "--per-subcategory", "3", "--concurrency", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert srv.requests == 3 and schemas(srv) == {"behavior_chains"} and w.most <= 2
    st = run / "chains"
    summ = json.loads((st / "summary.json").read_text())
    new = rows(st / "records.jsonl")
    assert summ["proposed"] == 9 and summ["failures_by_reason"].get("degenerate_repeat", 0) >= 3
    assert summ["valid"] == summ["new_chains"] + summ["duplicates"] and summ["merged_total"] == 240 + len(new)
    assert summ["proposed"] == summ["valid"] + sum(v for k, v in summ["failures_by_reason"].items() if k != "duplicate")
    assert all(x["source"] == "synthesized" and x["generator"] == "openai:scripted" for x in new)
    # review: drop every synthesized chain but one, import, use as instruction input
    import csv
    with open(st / "review.csv", newline="") as f: table = list(csv.DictReader(f))
    syn = [x for x in table if x["source"] == "synthesized"]
    assert len(syn) == len(new) and all(x["keep"] == "1" for x in table)
    for x in syn[1:]: x["keep"] = "0"                                  # the reviewer keeps one synthesized chain
    with open(tmp_path / "reviewed.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0])); w.writeheader(); w.writerows(table)
    r = cli("chains-review", str(tmp_path / "reviewed.csv"), "--out", str(run))
    assert r.returncode == 0, r.stderr
    reviewed = rows(st / "reviewed.jsonl")
    assert len(reviewed) == 240 + min(1, len(new))
    r = cli("chains-review", str(tmp_path / "missing.csv"), "--out", str(run))
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "file not found" in r.stderr and "Traceback" not in r.stderr
