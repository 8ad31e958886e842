"End-to-end checks of `agentalign taxonomy` as a user runs it (a subprocess of the installed console script)."
import json, shutil, subprocess, sys
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
