"""Acceptance tests of the SFT stage: exact assistant-only masks, the CLI end to end with a tiny model, bad input as one
line, the shipped accelerate configs, and a real 2-process data-parallel training on CPU (gloo)."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

from agentalign.dataset import DatasetConfig, ResponseInput, fixture_records, row_from_record, run_dataset, write_fixture_run
from agentalign.models import render_row
from agentalign.decision import masked_spans
from agentalign.models import tiny_model_folder
from agentalign.sft import SFTConfig, tokenize_conversation
from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "agentalign"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

def cli(*args, timeout=300):
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)

@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer
    from agentalign.models import embedded_model_path
    return AutoTokenizer.from_pretrained(str(embedded_model_path()))

@pytest.fixture(scope="module")
def run_with_dataset(tmp_path_factory):
    run = write_fixture_run(tmp_path_factory.mktemp("run"), n=24, seed=1)
    run_dataset(run, DatasetConfig(tokenizer=None, figures=False, validation_share=0.2))
    return run

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("tiny") / "tiny-chatml")

def assistant_turns(messages):
    "What the assistant writes per turn, rendered independently of the mask code (the project template's format)."
    out = []
    for m in messages:
        if m["role"] != "assistant": continue
        calls = ['<tool_call>\n{"name": "%s", "arguments": %s}\n</tool_call>' % (tc["function"]["name"], tc["function"]["arguments"])
                 for tc in (m.get("tool_calls") or [])]
        out.append("\n".join(([m["content"]] if m.get("content") else []) + calls) + "<|im_end|>")
    return out

def test_assistant_masks_cover_exactly_the_assistant_turns(tok):
    rows = [row_from_record(ResponseInput.model_validate(r)) for r in fixture_records(30, seed=3)]
    # plus a conversation with a system prompt, text beside parallel tool calls, two results in one turn, a second user turn
    rows.append(row_from_record(ResponseInput.model_validate({
        "id": "par", "category": "c", "kind": "benign", "label": "benign", "tools": [],
        "messages": [{"role": "system", "content": "Sys."}, {"role": "user", "content": "Do a and b."},
                     {"role": "assistant", "content": "Doing both.", "tool_calls": [
                         {"id": "1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
                         {"id": "2", "type": "function", "function": {"name": "b", "arguments": '{"x": [1, 2]}'}}]},
                     {"role": "tool", "tool_call_id": "1", "content": "A-RESULT"}, {"role": "tool", "tool_call_id": "2", "content": "B-RESULT"},
                     {"role": "assistant", "content": "Both done."}, {"role": "user", "content": "Thanks!"},
                     {"role": "assistant", "content": "You're welcome."}]})))
    for row in rows:
        msgs, tools = render_row(row, **SFTConfig().render_kw)
        enc = tokenize_conversation(tok, msgs, tools)
        spans = masked_spans(enc)
        assert [tok.decode(enc["input_ids"][a:b]) for a, b in spans] == assistant_turns(msgs), row["id"]
        for a, _ in spans: assert tok.decode(enc["input_ids"][:a]).endswith("<|im_start|>assistant\n")
        outside = tok.decode([i for i, l in zip(enc["input_ids"], enc["labels"]) if l == -100])
        inside = "".join(tok.decode(enc["input_ids"][a:b]) for a, b in spans)
        for m in msgs:
            if m["role"] in ("tool", "user", "system"):
                assert m["content"] in outside and m["content"] not in inside
        assert "<tools>" not in inside and "<tool_response>" not in inside
        assert enc["labels"] == [i if l != -100 else -100 for i, l in zip(enc["input_ids"], enc["labels"])]
        assert tokenize_conversation(tok, msgs, tools, method="prefix") == enc   # generic method agrees with the template's tags

def test_prefix_method_on_a_template_without_generation_tags(tok):
    from agentalign.models import CHAT_TEMPLATE
    plain = CHAT_TEMPLATE.replace("{%- generation -%}", "").replace("{%- endgeneration -%}", "")
    row = row_from_record(ResponseInput.model_validate(next(r for r in fixture_records(6, seed=0) if r["label"] == "benign")))
    msgs, tools = render_row(row, **SFTConfig().render_kw)
    assert tokenize_conversation(tok, msgs, tools, template=plain) == tokenize_conversation(tok, msgs, tools)

def test_cli_trains_saves_a_scorable_model(run_with_dataset, tiny):
    r = cli("sft", "--out", run_with_dataset.path, "--base-model", tiny, "--max-steps", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[0])
    assert out["steps"] == 2 and out["mode"] == "full" and out["device"] == "cpu"
    model = run_with_dataset.path / "sft" / "model"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from agentalign.models import CHAT_TEMPLATE
    from agentalign.agentharm.provider import model_spec
    m, t = AutoModelForCausalLM.from_pretrained(str(model)), AutoTokenizer.from_pretrained(str(model))
    base = AutoModelForCausalLM.from_pretrained(str(tiny)).state_dict()
    assert any(not torch.equal(v, base[k]) for k, v in m.state_dict().items()), "the saved model is the untrained base model"
    assert t.chat_template == CHAT_TEMPLATE
    spec = model_spec(str(model))                      # what `agentalign agentharm --model RUN/sft/model` uses
    assert spec["local"] and "chat_template" not in spec["model_args"]   # the folder's own template is used
    recs = [json.loads(l) for l in (run_with_dataset.path / "sft" / "records.jsonl").read_text().splitlines()]
    assert recs and all(r["assistant_tokens"] > 0 for r in recs)
    log = [json.loads(l) for l in (run_with_dataset.path / "sft" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [1, 2] and all(e["tokens"] > 0 for e in log if "loss" in e)
    assert (run_with_dataset.path / "figures" / "sft_loss.png").is_file()

def test_bad_input_is_one_clear_line(tmp_path, run_with_dataset, tiny):
    cases = [(("sft", "--out", tmp_path / "empty"), "empty/dataset: the dataset stage has not run"),
             (("sft", "--out", run_with_dataset.path, "--base-model", tmp_path / "nope"), "no such local folder"),
             (("sft", "--out", run_with_dataset.path, "--base-model", tmp_path), "not a Hugging Face model folder")]
    (tmp_path / "c.toml").write_text("[sft]\nlearning_rat = 1e-4\n")
    cases.append((("sft", "--out", run_with_dataset.path, "--base-model", tiny, "--config", tmp_path / "c.toml"), "learning_rat: unknown key"))
    for args, msg in cases:
        r = cli(*args, timeout=120)
        assert r.returncode == 2, (args, r.stderr[-2000:])
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and msg in lines[0], (args, r.stderr[-2000:])

def test_accelerate_configs_are_valid():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType
    found = {p.stem: load_config_from_file(str(p)) for p in sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))}
    assert {k: v.distributed_type for k, v in found.items()} == {
        "ddp": DistributedType.MULTI_GPU, "deepspeed_zero3": DistributedType.DEEPSPEED, "fsdp": DistributedType.FSDP}
    assert found["deepspeed_zero3"].deepspeed_config["zero_stage"] == 3
    assert all(c.mixed_precision == "bf16" for c in found.values())

def test_two_process_data_parallel_training_on_cpu(run_with_dataset, tiny, tmp_path):
    "A real 2-process DDP training (gloo backend) through torchrun and the CLI: both ranks train, rank 0 writes."
    import shutil
    run = tmp_path / "ddp-run"
    shutil.copytree(run_with_dataset.path / "dataset", run / "dataset")
    shutil.copytree(run_with_dataset.path / "responses", run / "responses")
    (tmp_path / "sft.toml").write_text("[sft]\nper_device_batch_size = 2\ngrad_accum = 1\neval = false\nfigures = false\nprogress = false\n")
    env = {**ENV, "GLOO_SOCKET_IFNAME": "lo"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
                        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(EXE), "sft", "--out", str(run),
                        "--base-model", str(tiny), "--max-steps", "3", "--config", str(tmp_path / "sft.toml")],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    s = json.loads((run / "sft" / "summary.json").read_text())
    assert s["world_size"] == 2 and s["steps"] == 3 and s["batch_size"] == 4
    assert (run / "sft" / "model" / "model.safetensors").is_file()
    assert r.stdout.count('"steps": 3') == 1            # only rank 0 reports

@pytest.mark.skipif(os.environ.get("AGENTALIGN_SLOW", "") not in ("1", "true", "yes", "on"), reason="slow: a real SFT of the embedded model (AGENTALIGN_SLOW=1)")
def test_embedded_model_learns_to_call_tools(tmp_path):
    """One epoch of full SFT of SmolLM2-135M on 100 fixture examples (minutes on a laptop CPU); the saved model answers
    at least 2 of the first 3 benign in-distribution validation requests with a <tool_call> block."""
    run = write_fixture_run(tmp_path / "run", n=100, seed=0)
    run_dataset(run, DatasetConfig(figures=False))
    r = cli("sft", "--out", run.path, timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.splitlines()[0])["steps"] == 21
    import torch
    from agentalign.models import load_model
    m, t = load_model(str(run.path / "sft" / "model"), device="cpu")
    rows = [json.loads(l) for l in (run.path / "dataset" / "data" / "validation.jsonl").read_text().splitlines()]
    calls = 0
    for row in [r for r in rows if r["label"] == "benign"][:3]:
        prompt = t.apply_chat_template(row["messages"][:1], tools=json.loads(row["tools"]), add_generation_prompt=True, tokenize=False)
        ids = t(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad(): out = m.generate(**ids, max_new_tokens=32, do_sample=False)
        calls += "<tool_call>" in t.decode(out[0][ids["input_ids"].shape[1]:])
    assert calls >= 2
