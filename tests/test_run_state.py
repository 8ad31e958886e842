"""Run state you can trust: a failed stage is never "done", nothing is deleted before it is replaced, the same settings
give the same data.

The whole runner is exercised on a *fast* pipeline: every synthesis role on the scripted server of `conftest.py`
(instant, deterministic answers), SFT of a tiny random model for one step, no AgentHarm stages (their own
kill-and-resume is tested in `test_agentharm.py`). One uninterrupted run is the reference; then the same run is killed
(SIGINT and SIGKILL, alternately) once inside every stage at a seeded random moment, and resumed; its settings are
changed, its base model is made to fail, its inputs are corrupted. After each, a plain rerun either refuses with one
line or completes with records identical (by content) to the reference, and no stage is ever reported done with
outputs made with other settings.
"""
import hashlib, json, os, random, signal, subprocess, sys, tempfile, time
from pathlib import Path
import pytest
from conftest import ScriptedServer

EXE = Path(sys.executable).parent / "agentalign"
STAGES = ["taxonomy", "instructions", "quality", "responses", "dataset", "sft"]
VOLATILE = {"time", "seconds", "llm_seconds", "created", "finished", "opened", "tokens_per_s", "seconds_per_step", "peak_rss_mb",
            "seconds_per_sample", "t", "figures", "figure", "folder"}
PASSWORD = "s3cret-pass-9f2"


def files_with_password(folder: Path) -> list[str]:
    "Every file under `folder` that contains the URL password."
    return [str(p) for p in folder.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]


def fast_script(req):
    "Deterministic answers for every request the fast pipeline sends."
    props = (req.response_schema or {}).get("properties", {})
    text = req.messages[-1]["content"] if isinstance(req.messages[-1].get("content"), str) else ""
    if "harmful" in props: return {"harmful": "steal" in text.lower(), "rationale": "scripted judgment"}
    if "request" in props: return {"request": text[-400:]}
    return "I can't help with that: it could hurt people, so I won't do any part of it."


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "AGENTALIGN_TORCH_THREADS": "1"}


def run(out, *args, timeout=900):
    return subprocess.run([str(EXE), "run", "--out", str(out), "--preset", "tiny", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env())


def one_line_error(r, needle):
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], err[-2000:])
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err
    assert "Traceback" not in r.stdout + r.stderr


def normalised(obj):
    if isinstance(obj, dict): return {k: normalised(v) for k, v in sorted(obj.items()) if k not in VOLATILE}
    if isinstance(obj, list): return [normalised(x) for x in obj]
    return obj


def snapshot(out: Path) -> dict:
    "Content of every stage's records (volatile fields dropped), by stage."
    snap = {}
    for s in STAGES:
        p = out / s / "records.jsonl"
        rows = [normalised(json.loads(l)) for l in p.read_text().splitlines() if l.strip()] if p.is_file() else None
        snap[s] = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16] if rows is not None else None
    return snap


def cache_rows(run: Path) -> dict:
    "The run's LLM cache: request key -> time the answer was stored."
    import sqlite3
    p = run / "cache.sqlite"
    if not p.is_file(): return {}
    con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=60)
    try: return dict(con.execute("SELECT key, created FROM responses"))
    except sqlite3.OperationalError: return {}                             # the table is not created yet
    finally: con.close()


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    "The scripted server, a tiny base model, the fast config and an uninterrupted reference run."
    d = tmp_path_factory.mktemp("fast")
    from agentalign.models import tiny_model_folder
    tiny = tiny_model_folder(d / "tiny-model")
    srv = ScriptedServer(fast_script).start()
    url = srv.url.replace("http://", f"http://agentalign:{PASSWORD}@")
    cfg = d / "fast.toml"
    cfg.write_text(f'''[pipeline]
stages = {json.dumps(STAGES)}
base_model = "{tiny}"
[roles.default]
backend = "openai"
model = "scripted"
base_url = "{url}"
[instructions]
per_category = 1
limit = 2
[quality]
calibration_limit = 4
[responses]
retries = 0
[dataset]
tokenizer = "{tiny}"
figures = false
[sft]
max_steps = 1
max_length = 2048
figures = false
''')
    ref = d / "reference"
    r = run(ref, "--config", cfg)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    yield {"dir": d, "cfg": cfg, "ref": ref, "snap": snapshot(ref), "server": srv, "tiny": tiny}
    srv.stop()


def markers_match_settings(out: Path, ref: Path) -> None:
    "No stage of `out` is reported done with settings other than the reference's."
    from agentalign.core import RunDir
    r, want = RunDir(out), RunDir(ref)
    for s in STAGES:
        m = r.read_marker(s)
        if m is not None: assert m["settings"] == want.read_marker(s)["settings"], s


# ---- stage commands on a copy of the finished reference run -----------------------------------------------------------
import shutil

@pytest.fixture
def finished(fast, tmp_path):
    out = tmp_path / "run"; shutil.copytree(fast["ref"], out)
    return out

def cli(*args):
    from typer.testing import CliRunner
    from agentalign.cli import load_commands
    from agentalign.core import app
    load_commands()
    return CliRunner().invoke(app, [*map(str, args)])

def test_reference_run_is_complete(fast):
    snap = fast["snap"]
    assert all(snap[s] for s in STAGES if s != "taxonomy"), snap
    stages = json.loads((fast["ref"] / "pipeline.json").read_text())["stages"]
    assert {s: v["status"] for s, v in stages.items()} == {s: "done" for s in STAGES}, stages


def test_killed_in_every_stage_then_resumed_gives_the_same_records(fast, tmp_path):
    "SIGINT and SIGKILL at a seeded random moment inside every stage; each rerun resumes; the end is the reference."
    out, rnd, kept = tmp_path / "run", random.Random(20), {}
    for i, stage in enumerate(STAGES):
        p = subprocess.Popen([str(EXE), "run", "--out", str(out), "--preset", "tiny", "--config", str(fast["cfg"])], env=env(),
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started = out / stage / "config.json"
        while p.poll() is None and not started.is_file(): time.sleep(0.05)
        time.sleep(rnd.uniform(0.0, 1.5))
        sig = signal.SIGINT if i % 2 else signal.SIGKILL
        if p.poll() is None: os.killpg(p.pid, sig)
        try: p.wait(timeout=120)
        except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); p.wait()
        err = p.stderr.read()
        if sig == signal.SIGINT and p.returncode not in (0, None):
            assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err, (p.returncode, err[-2000:])
        markers_match_settings(out, fast["ref"])
        kept.update(cache_rows(out))
    r = run(out, "--config", fast["cfg"])
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert snapshot(out) == fast["snap"]
    now = cache_rows(out)                                                  # no answered LLM request was asked again
    assert kept and not [k for k, t in kept.items() if now.get(k) != t]
    # what the SIGKILLed runs left (their private settings files, with the URL password) is gone after the resume
    assert not list(out.glob(".tmp/agentalign-stage-*"))
    assert files_with_password(out) == []
    r = run(out, "--config", fast["cfg"])                                  # finished: nothing is replayed
    stages = json.loads((out / "pipeline.json").read_text())["stages"]
    assert r.returncode == 0 and not any(v["ran"] for v in stages.values()), stages


def test_changed_settings_are_refused_until_overwrite(fast, finished, tmp_path):
    out = finished; before = snapshot(out)
    other = tmp_path / "other.toml"; other.write_text(fast["cfg"].read_text().replace("calibration_limit = 4", "calibration_limit = 6"))
    one_line_error(run(out, "--config", other), "quality (settings differ: calibration_limit 4 -> 6)")
    assert snapshot(out) == before                                          # nothing was touched
    one_line_error(run(out), "settings differ")                            # forgot the config: the tiny preset alone
    assert snapshot(out) == before
    r = run(out, "--config", other, "--overwrite"); assert r.returncode == 0, r.stderr[-2000:]
    stages = json.loads((out / "pipeline.json").read_text())["stages"]
    ran = [s for s, v in stages.items() if v["ran"]]                       # a later stage reruns only if its input changed
    assert ran[:2] == ["quality", "responses"] and stages["quality"]["was"] == "changed" and stages["responses"]["was"] == "stale", stages
    assert all(v["status"] == "done" for v in stages.values()), stages
    from agentalign.core import RunDir
    assert RunDir(out).read_marker("quality")["settings"]["calibration_limit"] == 6


def test_a_base_model_that_cannot_load_is_refused_before_anything_runs(fast, tmp_path):
    out = tmp_path / "run"
    for base, needle in [("/no/such/model", "no such local folder"), (str(tmp_path / "empty"), "has no weights")]:
        (tmp_path / "empty").mkdir(exist_ok=True); (tmp_path / "empty" / "config.json").write_text("{}")
        cfg = tmp_path / "bad.toml"; cfg.write_text(fast["cfg"].read_text().replace(f'base_model = "{fast["tiny"]}"', f'base_model = "{base}"'))
        one_line_error(run(out, "--config", cfg), f"stage sft, base_model: model {base!r}")
        assert not (out / "taxonomy").exists()


def test_corrupted_outputs_are_rebuilt_to_the_same_records(fast, finished):
    out = finished
    recs = out / "instructions" / "records.jsonl"
    recs.write_text(recs.read_text()[:-40])                                # the last line torn
    arrow = next((out / "dataset" / "hf").rglob("*.arrow")); arrow.write_bytes(arrow.read_bytes()[:100])
    from typer.testing import CliRunner
    from agentalign.cli import load_commands
    from agentalign.core import app
    load_commands()
    res = CliRunner().invoke(app, ["sft", "--out", str(out), "--config", str(fast["cfg"]), "--preset", "tiny", "--overwrite"])
    assert res.exit_code == 2 and "the dataset stage output changed since it finished" in res.output, res.output
    r = run(out, "--config", fast["cfg"]); assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    stages = json.loads((out / "pipeline.json").read_text())["stages"]
    assert stages["instructions"]["was"] == "damaged" and stages["dataset"]["ran"], stages
    assert snapshot(out) == fast["snap"]


def test_no_secret_and_no_leftovers(fast):
    "The base URL's password is nowhere in the run folder (executed notebooks included); no temporary folder or kernel file is left behind."
    assert files_with_password(fast["ref"]) == []
    assert not (fast["ref"] / ".tmp").exists() or not any((fast["ref"] / ".tmp").iterdir())
    assert not (fast["ref"] / ".staging").exists() or not any((fast["ref"] / ".staging").iterdir())


def test_two_runs_on_one_folder(fast, tmp_path):
    "A second `agentalign run` on a folder in use is refused with one line, and touches nothing of the first."
    from agentalign.core import RunDir
    out = tmp_path / "run"; lock = RunDir(out).lock("run"); lock.acquire()
    try: one_line_error(run(out, "--config", fast["cfg"]), "is in use by another `agentalign run`")
    finally: lock.release()
    assert not (out / "logs").exists() and not (out / "taxonomy").exists()


@pytest.mark.parametrize("args,needle", [(["--timeout", "-1"], "--timeout"), (["--timeout", "0"], "--timeout")])
def test_bad_run_options_are_one_line(tmp_path, args, needle):
    r = subprocess.run([str(EXE), "run", "--out", str(tmp_path), "--preset", "tiny", *args], capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

def test_overwrite_checks_before_it_deletes(fast, finished):
    sft = files(finished / "sft")
    shutil.rmtree(finished / "dataset" / "hf")
    res = cli("sft", "--out", finished, "--preset", "tiny", "--config", fast["cfg"], "--overwrite")
    assert res.exit_code == 2 and "dataset" in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert files(finished / "sft") == sft                                  # the old model, records and summary are all there
    ds = files(finished / "responses")
    res = cli("export", "--out", finished, "--preset", "tiny", "--config", fast["cfg"], "--overwrite", "--mix", "nope:0.2")
    assert res.exit_code == 2 and "nope" in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert files(finished / "responses") == ds and not (finished / "dataset" / "config.json").read_text().count("nope")

@pytest.mark.parametrize("stage,command,upstream", [("quality", "filter", "instructions"), ("responses", "respond", "quality"),
                                                    ("dataset", "export", "responses")])
def test_a_torn_input_line_is_a_failure_not_a_loss(fast, finished, stage, command, upstream):
    src = finished / upstream / "records.jsonl"
    lines = src.read_text().splitlines()
    src.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])          # the last record cut off mid-way
    res = cli(command, "--out", finished, "--preset", "tiny", "--config", fast["cfg"], "--overwrite")
    assert res.exit_code == 0, res.output
    fails = [json.loads(l) for l in (finished / stage / "failures.jsonl").read_text().splitlines()]
    torn = [f for f in fails if "incomplete last line" in f["detail"]]
    assert len(torn) == 1 and torn[0]["item_id"].endswith(str(len(lines))), fails

def test_respond_on_an_empty_input_is_one_line(fast, finished):
    (finished / "quality" / "records.jsonl").write_text("")
    res = cli("respond", "--out", finished, "--preset", "tiny", "--config", fast["cfg"], "--overwrite")
    assert res.exit_code == 2 and "no kept item to respond to" in res.output and len(res.output.strip().splitlines()) == 1, res.output

def test_an_unreadable_stage_config_needs_overwrite(fast, finished):
    (finished / "quality" / "config.json").write_text("{not json")
    res = cli("filter", "--out", finished, "--preset", "tiny", "--config", fast["cfg"])
    assert res.exit_code == 2 and "config.json: unreadable" in res.output, res.output
    res = cli("filter", "--out", finished, "--preset", "tiny", "--config", fast["cfg"], "--overwrite")
    assert res.exit_code == 0, res.output
