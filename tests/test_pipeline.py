"`agentalign run` as a user runs it: bad input gives one line; the tiny preset runs every stage end to end."
import subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "agentalign"

def run(*args, env=None, timeout=300):
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)

def one_line_error(r, needle):
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], err[-2000:])
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err
    assert "Traceback" not in r.stdout + r.stderr

@pytest.mark.parametrize("body,suffix,needle", [
    ("[pipeline\n", ".toml", "invalid TOML"),
    ("pipeline: [1, 2\n", ".yaml", "invalid YAML"),
    ("[pipeline]\nstagez = []\n", ".toml", "[pipeline]: stagez: unknown key"),
    ("[pipeline]\nstages = ['taxonomy', 'nonsense']\n", ".toml", "unknown stage 'nonsense'"),
    ("[roles.judge]\nmodle = 'x'\n", ".toml", "[roles.judge]: unknown key modle"),
    ("[roles.grader]\nmodel = 'x'\n", ".toml", "unknown role [roles.grader]"),
    ("[instructionz]\n", ".toml", "unknown table [instructionz]"),
    ("x = 1\n", ".ini", "config files are TOML"),
])
def test_bad_config_is_one_line(tmp_path, body, suffix, needle):
    cfg = tmp_path / f"c{suffix}"; cfg.write_text(body)
    one_line_error(run("run", "--out", tmp_path / "r", "--preset", "tiny", "--config", cfg), needle)

def test_bad_options_are_one_line(tmp_path):
    one_line_error(run("run", "--out", tmp_path / "r", "--preset", "huge"), "unknown preset 'huge'")
    one_line_error(run("run", "--out", tmp_path / "r", "--preset", "tiny", "--config", tmp_path / "none.toml"), "none.toml: config file not found")
    one_line_error(run("run", "--out", tmp_path / "r", "--preset", "tiny", "--only", "nope"), "--only: unknown stage 'nope'")
    (tmp_path / "file").write_text("x")
    one_line_error(run("run", "--out", tmp_path / "file", "--preset", "tiny"), "not a folder")

def test_missing_stage_notebook_is_one_line(tmp_path):
    "A notebook folder without one stage's notebook: one line naming it, before any stage runs."
    import os, shutil
    nbs = tmp_path / "nbs"; shutil.copytree(ROOT / "nbs", nbs)
    (nbs / "06_quality.ipynb").unlink()
    env = {**os.environ, "AGENTALIGN_NOTEBOOKS_DIR": str(nbs)}
    one_line_error(run("run", "--out", tmp_path / "r", "--preset", "tiny", env=env), "stage quality: notebook")
    assert not (tmp_path / "r" / "taxonomy").exists()
    env["AGENTALIGN_NOTEBOOKS_DIR"] = str(tmp_path / "nowhere")
    one_line_error(run("run", "--out", tmp_path / "r", "--preset", "tiny", env=env), "AGENTALIGN_NOTEBOOKS_DIR")


# ---- the tiny preset end to end with the embedded model ---------------------------------------------------------------
# (Killing and resuming every stage is tested on a fast scripted pipeline in test_run_state.py.)
import hashlib, json, os, time

TINY_STAGES = ["taxonomy", "instructions", "quality", "responses", "dataset", "sft", "intent_base", "intent_sft", "agentharm_base", "agentharm_sft"]
STAGE_FOLDERS = {"intent_base": "intent/base", "intent_sft": "intent/sft", "agentharm_base": "agentharm/base", "agentharm_sft": "agentharm/sft"}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

def jsonl(p: Path) -> list[dict]:
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]

VOLATILE = {"seconds", "llm_seconds", "created", "time", "t"}

def content_hash(p: Path) -> str:
    "A hash of a records file by content: the records in order, without timing fields."
    strip = lambda o: {k: strip(v) for k, v in sorted(o.items()) if k not in VOLATILE} if isinstance(o, dict) else [strip(x) for x in o] if isinstance(o, list) else o
    return hashlib.sha256(json.dumps([strip(r) for r in jsonl(p)], sort_keys=True).encode()).hexdigest()[:16]

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`agentalign run --preset tiny`: every stage, the embedded model in every role. CI has just made this run as its
    main job (`.ci/run` sets AGENTALIGN_TINY_RUN=runs/tiny), so its folder is checked here instead of a second copy;
    elsewhere the run is made in a temporary folder. Either way, rerunning the command must find it finished."""
    given = os.environ.get("AGENTALIGN_TINY_RUN")
    out = Path(given) if given else tmp_path_factory.mktemp("tiny") / "run"
    if given: assert (out / "pipeline.json").is_file(), f"AGENTALIGN_TINY_RUN={given}: no finished tiny run there"
    r = run("run", "--out", out, "--preset", "tiny", env=ENV, timeout=3600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    return {"out": out, "stdout": r.stdout, "stderr": r.stderr}

def test_tiny_same_records_with_two_cpu_hogs_beside_it(tiny_run, tmp_path):
    """The synthesis stages of the tiny preset again, with two busy processes on the machine: generation is bounded by
    tokens, never by the clock, so the records are identical (by content) to those of the run above."""
    cfg = tmp_path / "synthesis.toml"; cfg.write_text('[pipeline]\nstages = ["taxonomy", "instructions", "quality", "responses"]\n')
    import shutil                                        # the taxonomy is not compared: its finished stage is copied over
    shutil.copytree(tiny_run["out"] / "taxonomy", tmp_path / "busy" / "taxonomy")
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try: r = run("run", "--out", tmp_path / "busy", "--preset", "tiny", "--config", cfg, env=ENV, timeout=3600)
    finally:
        for h in hogs: h.kill(); h.wait()
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    for s in ("instructions", "quality", "responses"):
        assert content_hash(tmp_path / "busy" / s / "records.jsonl") == content_hash(tiny_run["out"] / s / "records.jsonl"), s

def test_tiny_every_stage_hands_over_its_records(tiny_run):
    out = tiny_run["out"]
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["stages"]) == TINY_STAGES
    for s in TINY_STAGES:
        folder = out / STAGE_FOLDERS.get(s, s)
        assert (folder / "summary.json").is_file(), s
        assert any(f.name.endswith(f"_{s}.ipynb") for f in (out / "notebooks").glob("*.ipynb")), s
    # instructions: every requested slot became a record or a failure, each saying where its text comes from
    ins = jsonl(out / "instructions" / "records.jsonl")
    isum = json.loads((out / "instructions" / "summary.json").read_text())
    assert len(ins) + isum["failures"] == isum["requested"] == 2 * 3
    assert {r["source"] for r in ins} <= {"llm", "rewrite", "draft"} and {r["kind"] for r in ins} == {"harmful", "benign", "borderline"}
    assert isum["mode"] == "rewrite" and all(r["generator"] == "local:embedded" and r["draft"] for r in ins)   # the embedded model rewrites drafts
    assert all(r["plan_coverage"] >= 1.0 for r in ins if r["source"] == "draft")
    assert sum(isum["rewrite_fallbacks"].values()) == isum["sources"]["draft"]                             # every fallback says why
    # quality: every instruction leaves with a verdict per check and a training label
    q = jsonl(out / "quality" / "records.jsonl")
    assert sorted(r["id"] for r in q) == sorted(r["id"] for r in ins)
    assert all(isinstance(r["keep"], bool) and r["checks"] for r in q)
    assert all(r["label"] in ("harmful", "benign") for r in q if r["kind"] != "borderline" or r["keep"])   # borderline: labelled by a trusted judge, else dropped
    kept = {r["id"]: r["label"] for r in q if r["keep"]}
    assert "harmful" in kept.values() and "benign" in kept.values()
    # responses: a refusal for each kept harmful request, an executed trajectory for each kept benign one (or a failure)
    resp = jsonl(out / "responses" / "records.jsonl")
    fails = jsonl(out / "responses" / "failures.jsonl") if (out / "responses" / "failures.jsonl").is_file() else []
    assert len(resp) + len(fails) == len(kept)
    for r in resp:
        tool_calls = [m for m in r["messages"] if m["role"] == "assistant" and m.get("tool_calls")]
        assert bool(tool_calls) == (kept[r["instruction_id"]] == "benign"), r["instruction_id"]
    # dataset -> SFT -> AgentHarm on the base and the fine-tuned model
    from datasets import load_from_disk
    ds = load_from_disk(str(out / "dataset" / "hf"))
    assert sum(len(v) for v in ds.values()) == len([r for r in resp if r.get("validation", {}).get("ok", True)])
    assert (out / "sft" / "model" / "config.json").is_file()
    for label in ("base", "sft"):                 # the decision before and after: 2 + 2 requests of each set ([intent] limit = 2)
        m = json.loads((out / "intent" / label / "metrics.json").read_text())
        assert {s: v["n"] for s, v in m["sets"].items()} == {"ours": 4, "agentharm": 4}, m["sets"]
        assert m["model_path"].endswith("sft/model") == (label == "sft"), m["model_path"]
    for label in ("base", "sft"):
        m = json.loads((out / "agentharm" / label / "metrics.json").read_text())
        assert m["harmful"]["n"] == 1 and m["benign"]["n"] == 1, m
    assert (out / "report.html").is_file() and "AgentHarm" in (out / "report.html").read_text()

def test_tiny_finished_run_replays_nothing(tiny_run):
    "A third run of the finished run: every stage is done (the AgentHarm stages included) and nothing is replayed."
    out = tiny_run["out"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    r = run("run", "--out", out, "--preset", "tiny", env=env, timeout=900)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    stages = json.loads((out / "pipeline.json").read_text())["stages"]
    assert list(stages) == TINY_STAGES
    assert {s: v["ran"] for s, v in stages.items() if v["ran"]} == {}, stages
    assert all(v["status"] == "done" for v in stages.values()), stages
