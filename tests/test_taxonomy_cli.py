"End-to-end checks of `agentalign taxonomy` as a user runs it (a subprocess of the installed console script)."
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "agentalign"

def run(*args):
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=120)

@pytest.fixture
def data_copy(tmp_path):
    d = tmp_path / "upstream"
    shutil.copytree(ROOT / "data" / "upstream", d)
    return d

def test_json_counts_and_findings():
    r = run("taxonomy", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {k: out[k] for k in ("categories", "subcategories", "tools", "chains")} == \
        {"categories": 8, "subcategories": 64, "tools": 86, "chains": 240}
    assert isinstance(out["capabilities"], int)
    for f in out["findings"]:
        assert set(f) == {"severity", "code", "subject", "message"} and "\n" not in f["message"]
    got = {(f["code"], f["subject"]) for f in out["findings"]}
    # every real inconsistency of the upstream data is named
    assert ("undeclared_capability", "Cryptography.create_bitcoin_payment") in got
    assert ("required_not_defined", "place_order_meituan") in got
    assert ("invalid_default", "search_google") in got
    assert ("nonstandard_keyword", "send_twilio_sms") in got
    assert ("extra_tool_keys", "dalle_edit_image") in got
    assert ("capability_unused", "System_Tools.get_info") in got

def test_planted_errors_are_reported(data_copy):
    tools = json.loads((data_copy / "synthetic_tools.json").read_text())
    tools[5]["function"]["parameters"]["required"] = "to"          # not an array: invalid schema
    (data_copy / "synthetic_tools.json").write_text(json.dumps(tools))
    caps = json.loads((data_copy / "capability_to_tools.json").read_text())
    caps["Quantum.entangle"] = ["send_gmail"]                       # unknown capability, and a mapping clash
    (data_copy / "capability_to_tools.json").write_text(json.dumps(caps))
    ch = json.loads((data_copy / "merged_tool_chains_cleaned.json").read_text())
    ch["privacy"][next(iter(ch["privacy"]))]["patterns"][0]["steps"].insert(0, "Teleport.beam_up")
    (data_copy / "merged_tool_chains_cleaned.json").write_text(json.dumps(ch))
    r = run("taxonomy", "--json", "--data", str(data_copy))
    assert r.returncode == 0, r.stderr
    got = {(f["code"], f["subject"]) for f in json.loads(r.stdout)["findings"]}
    assert ("invalid_schema", tools[5]["function"]["name"]) in got
    assert ("undeclared_capability", "Quantum.entangle") in got
    assert any(code == "unknown_step" for code, _ in got)
    # strict mode: one line, exit status 2
    r = run("taxonomy", "--strict", "--data", str(data_copy))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr

@pytest.mark.parametrize("content,expect", [
    (None, "synthetic_tools.json: file not found"),
    ("[{", "synthetic_tools.json: invalid JSON at line 1"),
    ('{"a": 1}', "synthetic_tools.json: wrong shape"),
])
def test_bad_files_give_one_clear_line(data_copy, content, expect):
    p = data_copy / "synthetic_tools.json"
    if content is None: p.unlink()
    else: p.write_text(content)
    r = run("taxonomy", "--data", str(data_copy))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and expect in r.stderr and "Traceback" not in r.stderr, r.stderr

def test_human_report_and_figures(tmp_path):
    r = run("taxonomy", "--figures", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("categories=8  subcategories=64")
    assert len(list(tmp_path.glob("taxonomy_*.png"))) == 3

@pytest.mark.parametrize("steps", [[], ["Search.web_search", "Communication.send_email"] * 6])
def test_chain_length_outside_bounds_fails_strict(data_copy, steps):
    "A curated chain of 0 or 12 steps is a data error: `--strict` exits 2 with one line naming the bounds."
    p = data_copy / "merged_tool_chains_cleaned.json"
    ch = json.loads(p.read_text())
    ch["cyber_crime"]["ddos_attack"]["patterns"][0]["steps"] = steps
    p.write_text(json.dumps(ch))
    r = run("taxonomy", "--json", "--data", str(data_copy))
    found = [f for f in json.loads(r.stdout)["findings"] if f["code"] == "chain_length"]
    assert [f["severity"] for f in found] == ["error"] and f"has {len(steps)} steps" in found[0]["message"]
    r = run("taxonomy", "--strict", "--data", str(data_copy))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "the method allows 1-5" in r.stderr, r.stderr

def test_lint_report_cached_across_processes(tmp_path):
    "With a warm lint cache a fresh process loads the taxonomy without importing jsonschema (the multi-second part)."
    probe = ("import sys; from agentalign.taxonomy import load_taxonomy, LINT_STATS; t = load_taxonomy(strict=True); "
             "import json; print(json.dumps({'js': 'jsonschema' in sys.modules, **LINT_STATS, 'findings': len(t.findings)}))")
    env = {**os.environ, "AGENTALIGN_CACHE_DIR": str(tmp_path)}
    cold, warm = [json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120).stdout)
                  for _ in range(2)]
    assert cold["js"] and cold["lint_runs"] == 2 and cold["meta_validators_built"] == 1      # the data, and the repaired data
    assert not warm["js"] and warm["lint_runs"] == 0 and warm["disk_hits"] == 2 and warm["findings"] == cold["findings"]

def test_stage_into_run_folder(tmp_path):
    "`taxonomy --out RUN` writes RUN/taxonomy/summary.json and RUN/figures/; other settings in the same folder are refused."
    run_dir = tmp_path / "run"
    r = run("taxonomy", "--out", str(run_dir))
    assert r.returncode == 0, r.stderr
    s = json.loads((run_dir / "taxonomy" / "summary.json").read_text())
    assert s["chains"] == 240 and s["findings"] and len(list((run_dir / "figures").glob("taxonomy_*.png"))) == 3
    r = run("taxonomy", "--out", str(run_dir), "--no-repair")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "other settings" in r.stderr
    cfg = tmp_path / "c.toml"; cfg.write_text("[taxonomy]\nstrictt = true\n")
    r = run("taxonomy", "--config", str(cfg))
    assert r.returncode == 2 and r.stderr.strip() == f"error: {cfg} [taxonomy]: strictt: unknown key"
