"""Behavior chains: the AgentHarm detector against texts it was not built from, the stage convention of `chains` through
the command line against the scripted OpenAI-compatible server (resume without duplicated failures or repeated
requests, other settings refused, all-failed is an error), and bad input that must be one line (`--examples 0`,
`--max-tokens -1`, a folder or a non-UTF-8 file given to `chains-review`)."""
import json, os
from pathlib import Path
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from typer.testing import CliRunner
from conftest import free_port
from agentalign.core import agentharm_dir, app
from agentalign.chains import curated_chains, CHAIN_SYSTEM, CHAIN_USER, capability_catalog
from agentalign.decontamination import load_decontaminator
from agentalign.taxonomy import load_taxonomy
import agentalign.chains  # noqa: F401  (registers the commands)

AH = agentharm_dir()


def _benchmark_prompts(folder: Path) -> dict[str, str]:
    "The behavior prompts, read straight from the files (not through the code under test)."
    out = {}
    for f in sorted(folder.glob("*_behaviors_*.json")):
        for b in json.loads(f.read_text(encoding="utf-8"))["behaviors"]:
            out[f"{f.stem}:{b['id']}"] = b["prompt"]
    return out


@pytest.mark.skipif(AH is None, reason="no AgentHarm copy (AGENTALIGN_AGENTHARM_DIR unset and ../shared/agentharm-validation absent)")
def test_decontaminator_catches_planted_prompts_and_passes_clean_text():
    dc, note = load_decontaminator(required=True)
    prompts = _benchmark_prompts(AH)
    assert len(prompts) == 64 and dc.size >= 64
    tax = load_taxonomy()
    clean = [c.explanation for c in curated_chains(tax)] + [CHAIN_SYSTEM, CHAIN_USER, capability_catalog(tax)]
    assert [t[:40] for t in clean if not dc.is_clean(t)] == []                         # no false positive on our own text
    for i, (bid, p) in enumerate(prompts.items()):
        planted = f"{clean[i % 240]}\n\nAlso: {p.upper().replace(',', ' ,').replace('.', '!')}\n\n{clean[(i + 7) % 240]}"
        assert bid in dc.hits(planted), bid                                             # caught and attributed
        w = p.split(); mid = len(w) // 2
        assert dc.hits(f"{clean[i % 240]} {' '.join(w[mid - 6:mid + 6])} {clean[(i + 3) % 240]}"), bid   # a 12-word window
    w = list(prompts.values())[0].split()
    assert dc.is_clean(" ".join(w[:4])) and dc.is_clean(" ".join(w[::2]))              # 4 words, or every other word: no 8-gram



@pytest.mark.skipif(AH is None, reason="no AgentHarm copy (AGENTALIGN_AGENTHARM_DIR unset and ../shared/agentharm-validation absent)")
def test_our_content_files_share_no_8gram_with_agentharm():
    "Every string of the value pools and phrase files (what requests are made of) is clean of AgentHarm 8-grams."
    import yaml
    from agentalign.content import texts
    from agentalign.core import data_dir
    dc, _ = load_decontaminator(required=True)
    files = sorted((data_dir() / "values").rglob("*.yaml")) + sorted((data_dir() / "phrases").rglob("*.yaml"))
    strings = [(f"{f.name}:{k}", t) for f in files for k, t in texts(yaml.safe_load(f.read_text()))]
    assert len(strings) > 5000
    assert [(w, dc.hits(t)) for w, t in strings if not dc.is_clean(t)] == []
    assert not dc.is_clean(" ".join(strings[0][1].split()[:3]) + " " + next(iter(_benchmark_prompts(AH).values())))  # the check can fail

def chain_writer(req):
    "Two proposals per request: a chain that depends on the request, and a degenerate one (a step after itself)."
    enum = req.response_schema["properties"]["chains"]["items"]["properties"]["steps"]["items"]["enum"]
    k = sum(map(ord, req.id or ""))
    return {"chains": [{"steps": [enum[k % len(enum)], enum[(k + 5) % len(enum)]], "explanation": "A pattern."},
                       {"steps": [enum[1], enum[1]], "explanation": "Degenerate."}]}


def test_chains_stage_resume_settings_and_all_failed(tmp_path, scripted_server):
    srv, run = scripted_server(chain_writer), tmp_path / "run"
    args = ["chains", "--out", str(run), "--backend", "openai", "--model", "scripted", "--base-url", srv.url,
            "--api-key-env", "AGENTALIGN_TEST_NO_KEY", "--limit", "2", "--per-subcategory", "2"]
    r = CliRunner().invoke(app, args); assert r.exit_code == 0, r.output
    ids = lambda: [(f["item_id"], f["reason"]) for f in map(json.loads, (run / "chains" / "failures.jsonl").read_text().splitlines())]
    subs = ["/".join(s) for s in load_taxonomy().subcategories[:2]]
    fails = ids()
    assert srv.requests == 2 and sorted(fails) == [(f"{s}#1", "degenerate_repeat") for s in subs]
    assert {b["response_format"]["json_schema"]["name"] for b in (e["body"] for e in srv.completions)} == {"behavior_chains"}
    r = CliRunner().invoke(app, args); assert r.exit_code == 0, r.output                 # same settings: from the run's cache
    assert srv.requests == 2 and ids() == fails                                         # nothing asked again, failures rewritten
    assert json.loads((run / "chains" / "summary.json").read_text())["cached"] == 2
    r = CliRunner().invoke(app, args[:-1] + ["3"])
    assert r.exit_code == 2 and "other settings" in r.output and "per_subcategory 2 -> 3" in r.output
    cfg = json.loads((run / "chains" / "config.json").read_text())
    assert cfg["config"]["writer"]["model"] == "scripted" and cfg["config"]["per_subcategory"] == 2
    down = ["chains", "--out", str(tmp_path / "down"), "--backend", "openai", "--model", "x", "--base-url", f"http://127.0.0.1:{free_port()}/v1",
            "--api-key-env", "AGENTALIGN_TEST_NO_KEY", "--limit", "2"]
    r = CliRunner().invoke(app, down)
    errs = [l for l in r.output.splitlines() if l.startswith("error:")]     # (the rest is the progress bar on stderr)
    assert r.exit_code == 2 and len(errs) == 1 and "chain writer at http://127.0.0.1:" in errs[0], r.output   # the probe, before any item
    assert "no answer from the endpoint (connection_error" in errs[0] and not (tmp_path / "down" / "chains" / "summary.json").exists()


@pytest.mark.parametrize("args,msg", [(["--examples", "0"], "examples: Input should be greater than or equal to 1"),
                                      (["--examples", "-2"], "examples: Input should be greater than or equal to 1"),
                                      (["--max-tokens", "0"], "max_tokens: Input should be greater than or equal to 1"),
                                      (["--max-tokens", "-1"], "max_tokens: Input should be greater than or equal to 1")])
def test_bad_numbers_are_one_line(tmp_path, args, msg):
    r = CliRunner().invoke(app, ["chains", "--out", str(tmp_path / "r"), *args])
    assert r.exit_code == 2 and msg in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_chains_review_bad_files_are_one_line(tmp_path):
    (tmp_path / "dir.csv").mkdir(); (tmp_path / "dir.jsonl").mkdir()
    (tmp_path / "latin.csv").write_bytes("keep,category,subcategory,steps\n1,caf\xe9,s,Search.web_search\n".encode("latin-1"))
    (tmp_path / "latin.jsonl").write_bytes(b'{"keep": 1, "category": "caf\xe9"}\n')
    for name, msg in [("dir.csv", "not a file"), ("dir.jsonl", "not a file"), ("latin.csv", "not a UTF-8 text file"),
                      ("latin.jsonl", "not a UTF-8 text file"), ("nothing.csv", "not found")]:
        r = CliRunner().invoke(app, ["chains-review", str(tmp_path / name), "--out", str(tmp_path / "run")])
        assert r.exit_code == 2 and msg in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output, (name, r.output)
