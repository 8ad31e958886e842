"""Simulated environment: the CLI in a real subprocess, and fault injection (random garbage arguments never raise)."""
import json, os, random, string, subprocess, sys
from pathlib import Path
from agentalign.environment import SimulatedEnvironment, sample_arguments

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def test_cli_call_and_errors():
    cli = [sys.executable, "-c", "from agentalign.cli import main; main()", ]
    run = lambda *a: subprocess.run(cli + list(a), capture_output=True, text=True, env=ENV, cwd=REPO, timeout=120)
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
            assert res["status"] in (400, 404, 429, 502) and res.get("code") != "simulator_error", (name, bad, res)
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
    for name, pid in pays:
        q = env.call(name.replace("create_", "query_"), {"payment_id": pid}) if name != "stripe_create_payment" else None
        if q is not None: assert q["found_in"] == "episode" and q["payment_id"] == pid
    assert sum(c["ok"] for c in env.calls) / len(env.calls) > 0.95
