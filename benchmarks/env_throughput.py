"""Throughput of the simulated environment: tool calls per second on this machine.

Run: .venv/bin/python benchmarks/env_throughput.py [--seconds-per-tool 0.2]
Arguments are generated once per tool (outside the timed loop); each timed call includes JSON-schema validation,
the capability handler and the call log, exactly as `SimulatedEnvironment.call` does for an agent. The environment is
reset every 1,000 calls so that episode state stays episode-sized. Target: >= 20,000 calls/s for typical tools.
The environment is split into agentalign.env.values / env_world / env_services / env_host; `agentalign.env.simulator`
re-exports what this script uses. Calls include the JSON limits check, the copy that keeps the caller's arguments
unchanged, and the result-size bound.
"""
import argparse, json, random, statistics, time
from agentalign.env.simulator import SimulatedEnvironment
from agentalign.env.values import sample_arguments

TYPICAL = ["search_google", "send_gmail", "send_twilio_sms", "create_paypal_payment", "query_paypal_payment", "post_tweet",
           "post_youtube_comment", "get_twitter_profile", "place_order_amazon", "bitcoin_transaction", "file_operation",
           "execute_command", "http_request", "query_blockchain_data", "search_products_amazon"]

def bench(env, name, args_pool, seconds):
    n, t0 = 0, time.perf_counter()
    while True:
        for a in args_pool:
            env.call(name, a)   # a few fail for state reasons (a file deleted earlier in the episode): they still count
            n += 1
            if n % 1000 == 0: env.reset()
        if time.perf_counter() - t0 >= seconds: break
    return n / (time.perf_counter() - t0)

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--seconds-per-tool", type=float, default=0.2); ap.add_argument("--json", action="store_true")
    o = ap.parse_args()
    env = SimulatedEnvironment(seed=0)
    for name, spec in env.tools.items():        # warm-up, outside the timings: schema compilation, the faker name pools
        for s in range(5): env.call(name, sample_arguments(spec, random.Random(s)))
    rates = {}
    for name, spec in env.tools.items():
        pool = []
        pool = [sample_arguments(spec, random.Random(s)) for s in range(50)]
        rates[name] = bench(env.reset(), name, pool, o.seconds_per_tool)
    typical = [rates[n] for n in TYPICAL]
    mixed_args = [(n, sample_arguments(env.tools[n], random.Random(i))) for i in range(40) for n in TYPICAL]
    env.reset(); n, ok, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        for name, a in mixed_args:
            ok += "error" not in env.call(name, a); n += 1
        env.reset()
    mixed = n / (time.perf_counter() - t0)
    err_args = {"query": 123}
    env.reset(); env.call("search_google", err_args)   # warm-up: the first error imports jsonschema (seconds), not a per-call cost
    t0 = time.perf_counter()
    for _ in range(2000): env.call("search_google", err_args)
    err_rate = 2000 / (time.perf_counter() - t0)
    summary = {"tools": len(rates), "typical_median_calls_per_s": round(statistics.median(typical)),
               "typical_min_calls_per_s": round(min(typical)), "mixed_typical_episode_calls_per_s": round(mixed), "mixed_ok_fraction": round(ok / n, 4),
               "all_tools_median_calls_per_s": round(statistics.median(rates.values())),
               "slowest": sorted(((round(v), k) for k, v in rates.items()))[:5], "invalid_argument_calls_per_s": round(err_rate)}
    if o.json: print(json.dumps({"summary": summary, "per_tool": {k: round(v) for k, v in rates.items()}}, indent=2))
    else:
        for k, v in sorted(rates.items(), key=lambda kv: -kv[1]): print(f"{k:34s} {v:10,.0f} calls/s")
        print(json.dumps(summary, indent=2))

if __name__ == "__main__": main()
