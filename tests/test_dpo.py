"""The pairs and DPO stages as a user runs them: bad input is one line; a DPO killed mid-training resumes from its checkpoint."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest

EXE = Path(sys.executable).parent / "agentalign"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "AGENTALIGN_TORCH_THREADS": "1"}


def cli(*args, timeout=900):
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)


def one_line_error(r, needle):
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], err[-2000:])
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err
    assert "Traceback" not in r.stdout + r.stderr


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    "A run folder with twin instances exported as a dataset, its pairs, and a tiny model."
    from agentalign.pairs import write_twin_run
    from agentalign.models import tiny_model_folder
    d = tmp_path_factory.mktemp("dpo")
    run = write_twin_run(d / "run", n_chains=4)
    r = cli("pairs", "--out", run.path)
    assert r.returncode == 0 and "8 pairs (4 harmful, 4 benign, 4 twin instances), 0 failures" in r.stdout, (r.stdout, r.stderr)
    return {"run": run.path, "tiny": tiny_model_folder(d / "tiny"), "dir": d}


def test_pairs_files(paired):
    pairs = [json.loads(l) for l in (paired["run"] / "pairs" / "pairs.jsonl").read_text().splitlines()]
    assert {p["label"] for p in pairs} == {"harmful", "benign"} and all(set(p) >= {"prompt", "chosen", "rejected", "tools"} for p in pairs)
    lf = json.loads((paired["run"] / "pairs" / "llamafactory" / "pairs.json").read_text())
    assert len(lf) == len(pairs) and all({"conversations", "chosen", "rejected", "tools", "system"} <= set(x) for x in lf)
    info = json.loads((paired["run"] / "pairs" / "llamafactory" / "dataset_info.json").read_text())["agentalign_pairs"]
    assert info["ranking"] is True and info["columns"]["chosen"] == "chosen"


def test_bad_input_is_one_line(paired, tmp_path):
    run, tiny = paired["run"], paired["tiny"]
    one_line_error(cli("dpo", "--out", tmp_path / "empty", "--model", tiny), "the pairs stage has not run")        # no pairs at all
    (tmp_path / "none.jsonl").write_text("")
    one_line_error(cli("dpo", "--out", run, "--model", tiny, "--pairs", tmp_path / "none.jsonl"), "none.jsonl: no pairs")
    good = (run / "pairs" / "pairs.jsonl").read_text().splitlines()
    (tmp_path / "torn.jsonl").write_text("\n".join([good[0], good[1][:40], *good[2:]]) + "\n")
    one_line_error(cli("dpo", "--out", run, "--model", tiny, "--pairs", tmp_path / "torn.jsonl"), "torn.jsonl:2: invalid JSON")
    noweights = tmp_path / "noweights"; noweights.mkdir()
    for f in tiny.iterdir():
        if not f.name.endswith((".safetensors", ".bin")): (noweights / f.name).write_bytes(f.read_bytes())
    one_line_error(cli("dpo", "--out", run, "--model", noweights), "has no weights")
    one_line_error(cli("dpo", "--out", run), "sft/model")                                                      # no fine-tuned model yet


def test_killed_dpo_resumes_from_its_checkpoint(paired):
    run, tiny = paired["run"], paired["tiny"]
    args = ["dpo", "--out", run, "--model", tiny, "--max-steps", "5", "--save-steps", "1"]
    p = subprocess.Popen([str(EXE), *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    ckpts = run / ".trainer" / "dpo"                                            # one folder per settings and inputs inside
    try:
        while not any(ckpts.glob("*/checkpoint-2/trainer_state.json")):
            assert p.poll() is None, "dpo ended before its second checkpoint"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        p.send_signal(signal.SIGKILL); p.wait()
    assert not (run / "dpo" / "done.json").exists() and not (run / "dpo" / "model").exists()
    r = cli(*args)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    s = json.loads((run / "dpo" / "summary.json").read_text())
    assert s["steps"] == 5 and s["resumed_from"] and int(s["resumed_from"].split("-")[1]) >= 2, s
    assert (run / "dpo" / "model" / "agentalign_dpo.json").is_file()
    log = [json.loads(l) for l in (run / "dpo" / "log.jsonl").read_text().splitlines()]
    assert min(e["step"] for e in log if "loss" in e) > 1                       # the resumed run did not start over
    r = cli(*args)                                                               # finished: nothing trained again
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[0])["steps"] == 5, r.stdout
    r = cli(*args[:5], "--max-steps", "6", "--save-steps", "1", "--overwrite")  # other settings: trained afresh, not from the old checkpoints
    s = json.loads((run / "dpo" / "summary.json").read_text())
    assert r.returncode == 0 and s["steps"] == 6 and s["resumed_from"] is None, (r.stderr[-2000:], s)
    assert len(list(ckpts.iterdir())) == 1                                      # the other settings' checkpoints are gone
