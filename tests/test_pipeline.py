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


# ---- the tiny preset end to end, killed once mid-stage --------------------------------------------------------------
import json, os, signal, sqlite3, time

TINY_STAGES = ["taxonomy", "instructions", "quality", "responses", "dataset", "sft", "agentharm_base", "agentharm_sft"]
STAGE_FOLDERS = {"agentharm_base": "agentharm/base", "agentharm_sft": "agentharm/sft"}

def cache_rows(run: Path) -> dict:
    "The run's LLM cache: request key -> time the response was stored."
    p = run / "cache.sqlite"
    if not p.is_file(): return {}
    con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=60)
    try: return dict(con.execute("SELECT key, created FROM responses"))
    except sqlite3.OperationalError: return {}          # the table is not created yet
    finally: con.close()

def jsonl(p: Path) -> list[dict]:
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`agentalign run --preset tiny`, SIGKILLed (the whole process group: driver and kernel) once the responses stage
    has stored LLM responses, then run again to the end. Returns what the test needs from both runs."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    p = subprocess.Popen([str(EXE), "run", "--out", str(out), "--preset", "tiny"], env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    before_responses = None
    try:
        while p.poll() is None:
            time.sleep(0.5)
            if before_responses is None and (out / "responses" / "config.json").is_file():
                before_responses = len(cache_rows(out))
            if before_responses is not None and len(cache_rows(out)) > before_responses:
                os.killpg(p.pid, signal.SIGKILL); p.wait(); break
    finally:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL); p.wait()
    err = p.stderr.read()
    assert p.returncode == -signal.SIGKILL, f"the run ended before the responses stage stored a response: rc {p.returncode}\n{err[-3000:]}"
    killed = {"cache": cache_rows(out), "finished": {s: (out / s / "summary.json").read_bytes() for s in ("taxonomy", "instructions", "quality")},
              "records": {s: (out / s / "records.jsonl").read_text() for s in ("instructions", "quality")},
              "notebooks": {f.name: f.stat().st_mtime_ns for f in (out / "notebooks").glob("*.ipynb")}}
    assert not (out / "responses" / "summary.json").exists()
    r = run("run", "--out", out, "--preset", "tiny", env=env, timeout=3600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    return {"out": out, "killed": killed, "stdout": r.stdout, "stderr": r.stderr}

def test_tiny_rerun_after_sigkill_loses_nothing(tiny_run):
    out, killed = tiny_run["out"], tiny_run["killed"]
    now = cache_rows(out)
    assert len(killed["cache"]) > 0 and len(now) > len(killed["cache"])
    repeated = [k for k, t in killed["cache"].items() if now.get(k) != t]
    assert not repeated, f"{len(repeated)} finished LLM requests were asked again (or lost) after the kill"
    for s, data in killed["finished"].items():                       # finished stages were not rerun
        assert (out / s / "summary.json").read_bytes() == data, f"finished stage {s} was rerun"
    for s, text in killed["records"].items():
        assert (out / s / "records.jsonl").read_text() == text
    for name, mtime in killed["notebooks"].items():
        if not name.endswith("responses.ipynb"): assert (out / "notebooks" / name).stat().st_mtime_ns == mtime, name

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
    # quality: every instruction leaves with a verdict per check and a training label
    q = jsonl(out / "quality" / "records.jsonl")
    assert sorted(r["id"] for r in q) == sorted(r["id"] for r in ins)
    assert all(r["label"] in ("harmful", "benign") and isinstance(r["keep"], bool) and r["checks"] for r in q)
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
