"""Simulated environment: the CLI in a real subprocess, fault injection (random garbage arguments never raise), the
JSON limits (huge numbers, deep nesting, huge arguments), bounded results, and no change to the caller's arguments."""
import json, os, random, string, subprocess, sys
from pathlib import Path
from agentalign.env.simulator import SimulatedEnvironment
from agentalign.env.values import sample_arguments
from agentalign.env.world import MAX_RESULT_CHARS, MAX_ARGUMENT_CHARS

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


CLI = [sys.executable, "-c", "from agentalign.cli import main; main()"]
def run_cli(*a): return subprocess.run(CLI + list(a), capture_output=True, text=True, env=ENV, cwd=REPO, timeout=120)

def test_cli_call_and_errors():
    run = run_cli
    r = run("env-call", "query_blockchain_data", '{"network": "bitcoin", "query_type": "block", "identifier": "840000"}', "--seed", "2")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["block"]["number"] == 840000
    r = run("env-call", "send_twilio_sms", '{"to": 5, "message": "hi"}')
    assert r.returncode == 1 and json.loads(r.stdout)["field"] == "to"
    r = run("env-call", "teleport", "sample")
    assert r.returncode == 2 and r.stderr.strip() == "error: unknown tool 'teleport'"


def _mutate(r: random.Random, v):
    "A random corruption of a JSON value: wrong types, nulls, huge numbers, odd strings, deleted or extra keys."
    choice = r.randrange(8)
    if choice == 0: return None
    if choice == 1: return r.choice([0, -1, 10 ** 30, 1e308, float("nan"), True, [], {}, ""])
    if choice == 2: return "".join(r.choice(string.printable) for _ in range(r.randint(0, 40)))
    if isinstance(v, dict) and v:
        v = dict(v); k = r.choice(list(v))
        if choice == 3: del v[k]
        elif choice == 4: v["extra_" + k] = 1
        else: v[k] = _mutate(r, v[k])
        return v
    if isinstance(v, list) and v: return [_mutate(r, x) for x in v]
    return v


def test_fuzzed_arguments_never_raise():
    "Thousands of corrupted calls (dicts and raw strings): always a JSON-serialisable dict, an error result names a field."
    env = SimulatedEnvironment(seed=0)
    r = random.Random(1234)
    n_err = 0
    for i in range(4000):
        name = r.choice(list(env.tools))
        a = sample_arguments(env.tools[name], r)
        bad = _mutate(r, a)
        if i % 5 == 0: bad = json.dumps(bad)[: r.randint(0, 200)] if r.random() < 0.5 else json.dumps(bad)
        res = env.call(name, bad)
        assert isinstance(res, dict)
        json.dumps(res)                       # serialisable (NaN is allowed by json.dumps; the point is no exception)
        if "error" in res:
            n_err += 1
            assert res["status"] in (400, 404, 413, 429, 502) and res.get("code") != "simulator_error", (name, bad, res)
    assert n_err > 1000


def test_long_episode_state_stays_consistent():
    "A long mixed episode: every call succeeds with fresh sampled arguments, and created objects stay queryable."
    env = SimulatedEnvironment(seed=9)
    r = random.Random(9)
    pays = []
    for i in range(3000):
        name = r.choice(list(env.tools))
        res = env.call(name, sample_arguments(env.tools[name], r))
        if name.startswith("create_") and name.endswith("_payment") and "payment_id" in res: pays.append((name, res["payment_id"]))
    queryable = [(name, pid) for name, pid in pays if name.replace("create_", "query_") in env.tools]   # Stripe has no query tool
    assert len(queryable) >= 10, pays
    for name, pid in queryable:
        q = env.call(name.replace("create_", "query_"), {"payment_id": pid})
        assert q["found_in"] == "episode" and q["payment_id"] == pid, (name, q)
    assert sum(c["ok"] for c in env.calls) / len(env.calls) > 0.95


def _deep(n):
    v = cur = []
    for _ in range(n): cur.append([]); cur = cur[0]
    return v


def test_huge_number_and_deep_nesting_are_error_results():
    "A 5,000-digit integer and 5,000 levels of nesting, as dicts or JSON text: error results naming the field, never an exception."
    env = SimulatedEnvironment(seed=0)
    cases = [("search_google", '{"query": "x", "num_results": 1' + "0" * 5000 + "}", "arguments"),
             ("search_google", {"query": "x", "num_results": 10 ** 5000}, "num_results"),
             ("search_google", {"query": "x", "num_results": -10 ** 19}, "num_results"),
             ("search_google", '{"query": ' + "[" * 5000 + "]" * 5000 + "}", "arguments"),
             ("http_request", {"url": "https://api.example.com/v1", "method": "POST", "data": _deep(5000)}, "data" + "[0]" * 31),
             ("http_request", {"url": "https://api.example.com/v1", "method": "POST", "data": {"x": float("nan")}}, "data.x"),
             ("search_google", {"query": b"bytes"}, "query")]
    for tool, args, field in cases:
        res = env.call(tool, args)
        assert res["status"] == 400 and res["field"] == field, (field, res)
        json.dumps(res, allow_nan=False)
    assert len(env.calls) == len(cases) and not any(c["ok"] for c in env.calls)


def test_cli_huge_number_and_deep_nesting_one_result():
    "Through `agentalign env-call`: the error result is printed as JSON, exit status 1, no traceback."
    for args in ('{"query": "x", "count": 1' + "0" * 5000 + "}", '{"query": ' + "[" * 5000 + "]" * 5000 + "}"):
        r = run_cli("env-call", "search_bing", args)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert json.loads(r.stdout)["code"] == "invalid_json"


def test_caller_arguments_are_not_modified():
    "Schema defaults are applied to a copy: the caller's dict (and nested dicts) come back unchanged."
    env = SimulatedEnvironment(seed=0)
    for name, spec in env.tools.items():
        a = sample_arguments(spec, random.Random(3), required_only=True)
        before = json.dumps(a, sort_keys=True)
        env.call(name, a)
        assert json.dumps(a, sort_keys=True) == before, name
    a = {"query": "tide tables"}
    assert "search_type" not in a and env.call("search_google", a)["search_type"] == "web" and a == {"query": "tide tables"}


def test_result_size_is_bounded():
    "A megabyte argument is refused (413); a large accepted one that a handler echoes many times is cut to MAX_RESULT_CHARS."
    env = SimulatedEnvironment(seed=0)
    big = "w " * 500_000
    for args in ({"query": big}, json.dumps({"query": big})):
        res = env.call("search_google", args)
        assert res["status"] == 413 and res["code"] == "payload_too_large" and len(json.dumps(res)) < 500
    for tool, args in [("search_google", {"query": "w " * 40_000}), ("execute_command", {"command": "echo " + "w " * 40_000}),
                       ("http_request", {"url": "https://api.example.com/v1", "method": "POST", "data": {"x": "y" * 90_000}})]:
        res = env.call(tool, args)
        n = len(json.dumps(res, ensure_ascii=False))
        assert "error" not in res and n <= MAX_RESULT_CHARS and "truncated" in res, (tool, n)
    assert len(json.dumps(env.call("search_google", {"query": "tide tables"}))) < 8000     # ordinary results are untouched


DIGEST = """
import hashlib, json, random
from agentalign.env.simulator import SimulatedEnvironment
from agentalign.env.values import sample_arguments
h = hashlib.sha256()
for seed in (0, 1):
    env = SimulatedEnvironment(seed=seed)
    for k in range(4):
        for i, (name, spec) in enumerate(env.tools.items()):
            a = sample_arguments(spec, random.Random(seed * 10_000 + k * 100 + i))
            h.update(json.dumps([name, a, env.call(name, a)], sort_keys=True).encode())
from agentalign.taxonomy import load_taxonomy
from agentalign.chains import curated_chains, instantiate
from agentalign.drafts import draft_for
tax = load_taxonomy()
for c in curated_chains(tax)[:120]:                      # the request drafts too: their wording draws in argument order
    inst = instantiate(c, tax, 0)
    for kind in ("harmful", "benign"): h.update(draft_for(inst, kind, 0, 0, tax).text.encode())
print(h.hexdigest())
"""


def test_same_seed_same_results_in_any_process():
    "Arguments and results of every tool (four calls each, two seeds) and request drafts are byte-identical in processes with different hash seeds."
    digests = [subprocess.run([sys.executable, "-c", DIGEST], capture_output=True, text=True, cwd=REPO, timeout=300,
                              env={**ENV, "PYTHONHASHSEED": h}) for h in ("1", "2", "3")]
    assert all(d.returncode == 0 for d in digests), digests[0].stderr[-2000:]
    assert len({d.stdout for d in digests}) == 1 and len(digests[0].stdout.strip()) == 64
