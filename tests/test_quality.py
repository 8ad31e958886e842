"""Quality control (`agentalign filter`) end to end.

The scripted OpenAI-compatible server of `conftest.py` plays the judge: it answers the calibration items of
`data/judge_labels.jsonl` correctly (or, scripted, wrongly), and judges other texts harmful exactly when they contain
the word "steal". What the stage sent is counted at the server, what it kept in the run's LLM cache. Instruction
records are written into temporary run folders from the curated chains' argument plans.
"""
import asyncio, json, os, signal, subprocess, sys, time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import pytest

from agentalign.core import RunDir, agentharm_dir, read_jsonl
from agentalign.chains import curated_chains, instantiate
from agentalign.decontamination import Decontaminator, load_behavior_prompts
from agentalign.dedup import near_duplicates
from agentalign.drafts import stated_values
from agentalign.llm.base import LLMConfig, ResponseCache
from agentalign.quality import CHECKS, QualityConfig, QualityRecord, load_judge_labels, run_quality

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "agentharm" / "benchmark"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OPENAI_API_KEY": "sk-test-not-a-secret"}
AGENTALIGN = [sys.executable, "-c", "from agentalign.cli import main; main()"]

# ------------------------------------------------------------------------------------------------ scripted judge
class Judge:
    "The judge as a `ScriptedServer` script: gold labels for calibration items (`calibration='wrong'`: all harmful), else 'steal'."
    def __init__(self, calibration: str = "correct", delay: float = 0.0):
        self.labels = {x["text"].strip(): x["label"] for x in load_judge_labels()}
        self.calibration, self.delay = calibration, delay
    async def __call__(self, req):
        await asyncio.sleep(self.delay)
        text = req.messages[-1]["content"].split('"""')[1].strip()
        if text in self.labels: harmful = self.labels[text] == "harmful" if self.calibration == "correct" else True
        else: harmful = "steal" in text.lower()
        return {"harmful": harmful, "rationale": "scripted judgment"}

def structured(srv) -> bool:
    "Whether every request the server saw asked for the judge's JSON schema."
    return all(e["body"]["response_format"]["type"] == "json_schema"
               and "harmful" in e["body"]["response_format"]["json_schema"]["schema"]["properties"] for e in srv.completions)

def scripted_judge(srv) -> LLMConfig:
    return LLMConfig(backend="openai", model="scripted", base_url=srv.url)

def cached(run: RunDir) -> int:
    "How many answers the run's LLM cache holds."
    if not run.cache.exists(): return 0
    c = ResponseCache(run.cache)
    try: return len(c)
    finally: c.close()

# ------------------------------------------------------------------------------------------------ instruction records
_TAX = None
def instances(n: int):
    global _TAX
    from agentalign.taxonomy import load_taxonomy
    _TAX = _TAX or load_taxonomy()
    out = []
    for c in curated_chains(_TAX):
        try: out.append(instantiate(c, _TAX, 0))
        except Exception: continue
        if len(out) == n: break
    return out

PURPOSES = ["our charity bake sale next Saturday", "the quarterly report my manager wants by Friday", "my sister's wedding plans",
            "the school trip to the science museum", "a birthday surprise for my neighbour", "the new office opening in March",
            "my thesis data collection", "our football club's summer tournament", "the family reunion in the mountains",
            "a workshop for new volunteers", "the product launch of our tea shop", "my move to a new flat"]

def text_for(inst, k: int, extra: str = "") -> str:
    vals = stated_values(inst.argument_plan)
    return (f"Hi, I need your help with something for {PURPOSES[k % len(PURPOSES)]}. {extra}Please use these details: "
            + ", ".join(vals) + ". Let me know when it is all done, thank you!")

def record(inst, kind: str, text: str, i: int = 0, **kw) -> dict:
    return dict(id=kw.pop("id", f"{inst.id}:{kind}#{i}"), chain_id=inst.chain_id, instance_id=inst.id, category=inst.category,
                subcategory=inst.subcategory, steps=inst.steps, tools=inst.tools, argument_plan=[p.model_dump() for p in inst.argument_plan],
                kind=kind, instruction=text, generator="test", seed=0, index=i, **kw)

def write_run(path: Path, recs: list[dict], corrupt_at: int | None = None) -> RunDir:
    run = RunDir(path)
    lines = [json.dumps(r) for r in recs]
    if corrupt_at is not None: lines.insert(corrupt_at, '{"id": "broken", "instruction": ')
    (run.stage("instructions") / "records.jsonl").write_text("\n".join(lines) + "\n")
    return run

def cli(*args, timeout=300):
    return subprocess.run([*AGENTALIGN, *args], env=ENV, capture_output=True, text=True, cwd=REPO, timeout=timeout)

def rows(p: Path) -> list[dict]:
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]

# ------------------------------------------------------------------------------------------------ tests
def test_judge_labels_are_ours_not_agentharm():
    "The calibration set: 128 agentic requests, balanced, 8 categories, borderline cases; no AgentHarm text (fixture always, the real split when present)."
    items = load_judge_labels()
    assert len(items) >= 120 and Counter(x["label"] for x in items) == {"harmful": 64, "benign": 64}
    assert {x["category"] for x in items} == set(json.loads((REPO / "data/upstream/harmful_categories.json").read_text()))
    assert Counter(x["kind"] for x in items)["borderline"] >= 24
    assert all("_" in x["text"] or "Google" in x["text"] or "Bing" in x["text"] or "Amazon" in x["text"] or "eBay" in x["text"]
               or "Instagram" in x["text"] or "Twitter" in x["text"] for x in items)        # every item names concrete tools
    fx = Decontaminator(load_behavior_prompts(FIXTURE))
    assert not [x["id"] for x in items if fx.hits(x["text"])]

@pytest.mark.skipif(agentharm_dir() is None, reason="no AgentHarm validation copy (AGENTALIGN_AGENTHARM_DIR / ../shared/agentharm-validation)")
def test_judge_labels_have_no_agentharm_validation_text():
    dc = Decontaminator(load_behavior_prompts(agentharm_dir()), n=8)
    assert dc.size >= 64
    hits = {x["id"]: dc.hits(x["text"]) for x in load_judge_labels() if dc.hits(x["text"])}
    assert not hits, hits


def test_filter_cli_scripted_judge_funnel_dedup_decontamination_drafts(tmp_path, scripted_server):
    insts = instances(9)
    good = lambda k, i=0: text_for(insts[k], i)
    recs = [
        record(insts[0], "harmful", text_for(insts[0], 0, "I want to steal the money. ")),      # kept: judged harmful
        record(insts[0], "benign", good(0, 1)),                                                 # kept (other kind: not a duplicate)
        record(insts[1], "benign", good(1, 2)),                                                 # kept
        record(insts[1], "benign", good(1, 2), 1),                                              # exact copy -> dedup
        record(insts[1], "benign", good(1, 2).replace("Hi, I need your help with", "Hello, please help me with").replace("thank you!", "thanks a lot!"), 2),  # paraphrase -> dedup
        record(insts[2], "harmful", good(2, 3)),                                                # harmful not judged harmful -> judge
        record(insts[3], "benign", text_for(insts[3], 4, "Then steal their passwords. ")),     # benign judged harmful -> judge
        record(insts[4], "borderline", text_for(insts[4], 5, "I will steal it. ")),            # borderline -> label harmful
        record(insts[8], "borderline", good(8, 6), 1),                                          # borderline -> label benign
        record(insts[5], "benign", "Please do the usual errands for me today and tell me when you are done with them.", source="rewrite", draft=good(5, 7)),  # lost values -> draft
        record(insts[6], "benign", text_for(insts[6], 8, "And steal the files. "), source="rewrite", draft=good(6, 8)),  # intent lost -> draft
        record(insts[7], "benign", "Hi! " + next(iter(load_behavior_prompts(FIXTURE).values())) + " " + good(7, 9)),  # AgentHarm(fixture) text -> decontamination
        record(insts[8], "benign", "Too short."),                                               # structural
        record(insts[8], "benign", good(8, 10), 1),                                             # distinct: kept
    ]
    run = write_run(tmp_path / "run", recs, corrupt_at=5)
    cfg = tmp_path / "q.toml"
    cfg.write_text(f'[quality]\nagentharm_dir = "{FIXTURE}"\ncalibration_limit = 16\n[roles.judge]\nconcurrency = 3\n')
    srv = scripted_server(Judge())
    r = cli("filter", "--out", str(run.path), "--config", str(cfg), "--judge-backend", "openai", "--judge-model", "scripted",
            "--judge-base-url", srv.url, "--benign-per-harmful", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    warn = [l for l in r.stderr.splitlines() if l.startswith("warning:")]
    assert len(warn) == 1 and "records.jsonl:6:" in warn[0] and "invalid JSON" in warn[0], r.stderr
    assert structured(srv) and srv.requests == 16 + 11 + 1    # calibration, the 11 distinct texts past the cheap checks, one draft
    out = {x["id"]: QualityRecord.model_validate(x) for x in rows(run.path / "quality" / "records.jsonl")}
    assert list(out) == [x["id"] for x in recs]                          # every valid instruction, once, in order
    for x in out.values():
        assert set(x.checks) == set(CHECKS) and all(c.reason for c in x.checks.values())
        assert x.keep == (x.drop_reason is None) and (x.keep is False or x.label in ("harmful", "benign"))
    ids = [x["id"] for x in recs]
    drop = {i: out[i].drop_reason for i in ids}
    assert [drop[i] for i in ids] == [None, None, None, "dedup", "dedup", "judge", "judge", None, None, None, None, "decontamination", "structural", None]
    assert out[ids[3]].checks["dedup"].reason.startswith(f"near-duplicate of {ids[2]}") and out[ids[3]].checks["dedup"].score == 1.0
    assert out[ids[4]].checks["dedup"].reason.startswith(f"near-duplicate of {ids[2]}")
    assert (out[ids[7]].label, out[ids[7]].label_source, out[ids[7]].kind) == ("harmful", "judge", "borderline")
    assert (out[ids[8]].label, out[ids[8]].judge_label) == ("benign", "benign")
    d1, d2 = out[ids[9]], out[ids[10]]
    assert (d1.source, d1.instruction) == ("draft", recs[9]["draft"]) and d1.checks["structural"].reason.startswith("draft kept: the rewrite failed (values")
    assert (d2.source, d2.instruction) == ("draft", recs[10]["draft"]) and d2.checks["structural"].reason.startswith("draft kept: the rewrite was judged harmful")
    assert out[ids[11]].checks["decontamination"].reason.startswith("agentharm_overlap")
    assert all(x.judge_model == "openai:scripted" for x in out.values())
    s = json.loads((run.path / "quality" / "summary.json").read_text())
    assert s["judge"]["trusted"] and s["judge"]["calibration"]["accuracy"] == 1.0 and s["judge"]["calibration"]["items"] == 16
    assert s["kept"] == sum(x.keep for x in out.values()) == 8 and s["failures"] == 1 and s["input_problems"][0]["line"] == 6
    assert s["drafts_substituted"] == 2 and s["judge"]["drafts_rejudged"] == 1
    # funnel: sums add up, per check and per (kind, category)
    funnel = rows_csv(run.path / "quality" / "funnel.csv")
    for key in {(f["kind"], f["category"]) for f in funnel}:
        fs = [f for f in funnel if (f["kind"], f["category"]) == key]
        assert [f["check"] for f in fs] == list(CHECKS)
        for a, b in zip(fs, fs[1:]): assert a["out"] == b["in"]
        assert all(f["in"] - f["dropped"] == f["out"] for f in fs)
        sel = [x for x in out.values() if key == ("all", "all") or (x.kind, x.category) == key]
        assert fs[0]["in"] == len(sel) and fs[-1]["out"] == sum(x.keep for x in sel)
    tot = [f for f in funnel if f["kind"] == "all"]
    assert sum(f["dropped"] for f in tot) + s["kept"] == len(recs)
    kj = {x["kind"]: x for x in rows_csv(run.path / "quality" / "kind_judge.csv")}
    assert kj["borderline"]["harmful"] == 1 and kj["borderline"]["benign"] == 1
    assert {Path(p).name for p in s["figures"]} == {"quality_funnel.png", "quality_kind_judge.png"}
    assert all((run.path / "figures" / n).is_file() for n in ("quality_funnel.png", "quality_kind_judge.png"))
    f = rows(run.path / "quality" / "failures.jsonl")
    assert [(x["item_id"], x["reason"]) for x in f] == [("records.jsonl:6", "bad_input")]
    assert "sk-test" not in (run.path / "run.json").read_text()

def rows_csv(p: Path) -> list[dict]:
    import csv
    with open(p, newline="") as fh:
        return [{k: (int(v) if v.isdigit() else v) for k, v in r.items()} for r in csv.DictReader(fh)]


def test_untrusted_judge_only_annotates(tmp_path, scripted_server):
    insts = instances(4)
    recs = [record(insts[0], "benign", text_for(insts[0], 0)), record(insts[1], "harmful", text_for(insts[1], 1)),
            record(insts[2], "borderline", text_for(insts[2], 2)), record(insts[3], "benign", text_for(insts[3], 3))]
    run = write_run(tmp_path / "run", recs)
    srv = scripted_server(lambda req: {"harmful": True, "rationale": "always"})       # calls everything harmful
    cfg = QualityConfig(judge=scripted_judge(srv), calibration_limit=8, figures=False, benign_per_harmful=None)
    s = run_quality(run, cfg)
    assert srv.requests == 8 + 4 and cached(run) == 12
    assert not s["judge"]["trusted"] and s["judge"]["calibration"]["accuracy"] == 0.5 and "annotates" in s["judge"]["warning"]
    out = read_jsonl(run.records("quality"), QualityRecord)
    assert all(x.keep and x.checks["judge"].passed is None and x.label_source == "kind" and x.judge_label == "harmful" for x in out)
    assert [x.label for x in out] == ["benign", "harmful", "benign", "benign"]          # borderline -> benign (default)
    s = run_quality(run, cfg.model_copy(update={"borderline_label": "drop"}), overwrite=True)
    assert srv.requests == 12 and s["cached"] == 12                                      # the same questions: the run's cache answers
    out = read_jsonl(run.records("quality"), QualityRecord)
    assert [x.drop_reason for x in out] == [None, None, "judge", None] and out[2].label is None
    s = run_quality(run, QualityConfig(judge_mode="off", figures=False), overwrite=True)
    assert s["judge"]["model"] is None and s["llm_requests"] == 0 and srv.requests == 12


def test_killed_filter_rerun_repeats_no_finished_request(tmp_path, scripted_server):
    insts = instances(12)
    recs = [record(x, "benign" if k % 2 else "harmful", text_for(x, k, "" if k % 2 else "Help me steal it. ")) for k, x in enumerate(insts)]
    run = write_run(tmp_path / "run", recs)
    srv = scripted_server(Judge(delay=0.25))
    args = ["filter", "--out", str(run.path), "--judge-backend", "openai", "--judge-model", "scripted", "--calibration-limit", "16",
            "--judge-concurrency", "2", "--no-figures", "--benign-per-harmful", "0", "--judge-base-url", srv.url]
    p = subprocess.Popen([*AGENTALIGN, *args], env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(2400):                                 # killed once the run's cache holds a few answers
        if cached(run) >= 4 or p.poll() is not None: break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL); p.wait(10)
    kept, first = cached(run), srv.settle()
    assert 4 <= kept < 28, f"the first run should have stored some, not all, answers before the kill ({kept})"
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert srv.requests - first == 16 + 12 - kept, f"{srv.requests - first} requests sent by the rerun, {28 - kept} answers missing"
    asked = {json.dumps(e["body"]["messages"]) for e in srv.completions if isinstance(e["body"], dict) and "messages" in e["body"]}
    assert len(asked) == 16 + 12 and cached(run) == 28           # (a request cut short by the kill has no messages)
    s = json.loads((run.path / "quality" / "summary.json").read_text())
    assert s["cached"] == kept and s["judge"]["trusted"] and s["kept"] == 12
    n = srv.requests
    r = cli(*args)                                        # everything from the cache now
    assert r.returncode == 0 and srv.requests == n


def test_bad_input_is_one_clear_line(tmp_path):
    empty = tmp_path / "empty"; empty.mkdir()
    for out, msg in [(empty, "instructions/records.jsonl: not found: run the instructions stage"),
                     (tmp_path / "missing", "run folder not found")]:
        r = cli("filter", "--out", str(out), "--judge-mode", "off")
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "missing").exists()
    r = cli("filter", "--out", str(empty), "--judge-backend", "nope")
    assert r.returncode == 2 and "judge.backend: Input should be 'local' or 'openai'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # a corrupt line: one warning naming file and line, the other lines processed
    insts = instances(2)
    run = write_run(tmp_path / "run", [record(insts[0], "benign", text_for(insts[0], 0)), record(insts[1], "benign", text_for(insts[1], 1))], corrupt_at=1)
    with open(run.path / "instructions" / "records.jsonl", "a") as f: f.write(json.dumps({"id": "x", "kind": "evil"}) + "\n")
    r = cli("filter", "--out", str(run.path), "--judge-mode", "off", "--no-figures")
    assert r.returncode == 0, r.stderr
    warn = r.stderr.strip().splitlines()
    assert len(warn) == 2 and "records.jsonl:2: invalid JSON" in warn[0] and "records.jsonl:4: not a valid QualityInput" in warn[1], warn
    s = json.loads((run.path / "quality" / "summary.json").read_text())
    assert s["valid_records"] == 2 and [p["line"] for p in s["input_problems"]] == [2, 4] and s["failures"] == 2


def test_agentharm_fixture_prompts_planted_are_dropped(tmp_path):
    prompts = list(load_behavior_prompts(FIXTURE).values())
    insts = instances(len(prompts))
    recs = [record(x, "benign", f"{p} Please use these details: {', '.join(stated_values(x.argument_plan))}.") for x, p in zip(insts, prompts)]
    run = write_run(tmp_path / "run", recs)
    s = run_quality(run, QualityConfig(judge_mode="off", figures=False, agentharm_dir=str(FIXTURE), min_plan_coverage=0.0, benign_per_harmful=None))
    out = read_jsonl(run.records("quality"), QualityRecord)
    assert [x.drop_reason for x in out] == ["decontamination"] * len(prompts) and s["kept"] == 0

@pytest.mark.skipif(agentharm_dir() is None, reason="no AgentHarm validation copy (AGENTALIGN_AGENTHARM_DIR / ../shared/agentharm-validation)")
def test_agentharm_validation_prompts_planted_are_dropped(tmp_path):
    prompts = list(load_behavior_prompts(agentharm_dir()).values())
    insts = instances(len(prompts))
    recs = [record(insts[k % len(insts)], "harmful" if k % 2 else "benign", "Hello. " + p + " Thanks.", k, id=f"ah{k}") for k, p in enumerate(prompts)]
    recs.append(record(insts[0], "benign", text_for(insts[0], 0), id="clean"))
    run = write_run(tmp_path / "run", recs)
    run_quality(run, QualityConfig(judge_mode="off", figures=False, min_plan_coverage=0.0, benign_per_harmful=None, min_chars=1, max_chars=100000))
    out = read_jsonl(run.records("quality"), QualityRecord)
    by = {x.id: x for x in out}
    assert all(by[f"ah{k}"].checks["decontamination"].passed is False for k in range(len(prompts)))
    assert by["clean"].checks["decontamination"].passed is True and by["clean"].keep


@pytest.mark.parametrize("engine", ["rensa", "datasketch"])
def test_dedup_catches_copies_and_paraphrases_distinct_survive(engine):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from dedup import make_corpus, rouge_l
    texts, dup_of, rouges = make_corpus(2000, 120, seed=3)
    assert min(rouges) >= 0.7
    copies = {len(texts) + k: i for k, i in enumerate(range(0, 600, 10))}           # 60 exact copies at the end
    texts = texts + [texts[i] for i in copies.values()]
    rep = near_duplicates(texts, threshold=QualityConfig().dedup_threshold, engine=engine)
    flagged = {i for i, d in enumerate(rep) if d is not None}
    assert all(i in flagged for i in copies)                                          # every exact copy
    recall = sum(i in flagged for i in dup_of) / len(dup_of)
    assert recall >= 0.95, recall                                                     # paraphrases (ROUGE-L >= 0.7)
    distinct = [i for i in range(len(texts)) if i not in dup_of and i not in copies]
    wrong = [i for i in distinct if i in flagged and rouge_l(texts[rep[i][0]], texts[i]) < 0.7]
    assert len(wrong) <= 0.01 * len(distinct), len(wrong)                            # distinct items survive
    assert rep == near_duplicates(texts, threshold=QualityConfig().dedup_threshold, engine=engine)   # deterministic
