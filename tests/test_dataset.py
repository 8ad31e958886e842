"""Acceptance tests of the dataset stage (`agentalign export`): the exported DatasetDict loads with `load_from_disk` and
trains with TRL as it is, the LLaMA-Factory export follows LLaMA-Factory's documented sharegpt schema, the card is
computed from the records, bad input is one clear line, bad lines are failures while the rest is exported."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

from agentalign.dataset import (COLUMNS, DatasetConfig, check_sharegpt, fixture_records, run_dataset, to_sharegpt,
                                write_fixture_run)

EXE = Path(sys.executable).parent / "agentalign"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

def cli(*args, timeout=300):
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = write_fixture_run(tmp_path_factory.mktemp("run"), n=30, seed=2)
    summary = run_dataset(run, DatasetConfig(validation_share=0.2))
    return run, summary

def test_loads_with_load_from_disk_and_trains_with_trl(exported, tmp_path):
    "The DatasetDict as a user gets it: messages + tools columns straight into TRL's SFTTrainer (its own tokenization)."
    import math, torch
    from datasets import load_from_disk
    from trl import SFTConfig, SFTTrainer
    from transformers import AutoTokenizer
    from agentalign.models import tiny_model_folder
    run, summary = exported
    dd = load_from_disk(str(run.path / "dataset" / "hf"))
    assert sorted(dd) == ["train", "validation"] and len(dd["train"]) + len(dd["validation"]) == 30
    assert set(dd["train"].column_names) == set(COLUMNS)
    ex = dd["train"][0]
    assert isinstance(ex["tools"], str) and isinstance(json.loads(ex["tools"]), list)
    for m in ex["messages"]:
        for tc in m["tool_calls"] or []: assert isinstance(json.loads(tc["function"]["arguments"]), dict)
    tiny = tiny_model_folder(tmp_path / "tiny-chatml")
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2, assistant_only_loss=True,
                     max_length=2048, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
                     disable_tqdm=True, logging_steps=1, save_strategy="no")
    tr = SFTTrainer(model=str(tiny), args=args, train_dataset=dd["train"], processing_class=AutoTokenizer.from_pretrained(str(tiny)))
    batch = tr.data_collator([tr.train_dataset[i] for i in range(2)])
    assert (batch["labels"] != -100).any() and (batch["labels"] == -100).any()   # assistant tokens carry loss, the rest not
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    out = tr.train()
    assert tr.state.global_step == 2 and math.isfinite(out.training_loss)
    changed = [k for k, v in tr.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "two training steps left every weight unchanged"

def test_llamafactory_export_matches_the_sharegpt_schema(exported):
    run, _ = exported
    lf = run.path / "dataset" / "llamafactory"
    info = json.loads((lf / "dataset_info.json").read_text())
    assert sorted(info) == ["agentalign_train", "agentalign_validation"]
    total = 0
    for name, entry in info.items():
        # the keys LLaMA-Factory's dataset_info.json documents for a sharegpt dataset with tools
        assert entry["formatting"] == "sharegpt" and entry["columns"] == {"messages": "conversations", "system": "system", "tools": "tools"}
        assert entry["tags"] == {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
        data = json.loads((lf / entry["file_name"]).read_text())
        assert isinstance(data, list) and data
        for ex in data:
            assert set(ex) == {"conversations", "system", "tools"} and check_sharegpt(ex) == []
            roles = [t["from"] for t in ex["conversations"]]
            # human/observation at odd positions, gpt/function_call at even ones, an even count, ends with the answer
            assert all(r in ("human", "observation") for r in roles[0::2]) and all(r in ("gpt", "function_call") for r in roles[1::2])
            assert len(roles) % 2 == 0 and roles[-1] == "gpt"
            for t in ex["conversations"]:
                if t["from"] == "function_call":
                    call = json.loads(t["value"])
                    assert set(call) == {"name", "arguments"} and isinstance(call["arguments"], dict)
            tools = json.loads(ex["tools"])
            assert all({"name", "description", "parameters"} <= set(t) for t in tools)
        total += len(data)
    assert total == 30
    assert check_sharegpt({"conversations": [{"from": "human", "value": "x"}, {"from": "function_call", "value": '{"name": "f", "arguments": "{}"}'}]}) \
        == ["turn 1: function_call must be {name, arguments: object} or a list of them"]

def test_card_and_files_are_computed_from_the_records(exported):
    run, summary = exported
    d = run.path / "dataset"
    card = (d / "README.md").read_text()
    assert card.startswith("---\n") and "license: apache-2.0" in card and "path: data/train.parquet" in card
    assert "Content warning" in card and "## AgentHarm decontamination" in card and "Apache-2.0" in card
    assert "| generated |" in card                                     # the run's quality funnel
    recs = fixture_records(30, seed=2)
    h = sum(r["label"] == "harmful" for r in recs)
    assert f"{h} harmful requests answered with refusals" in card
    for r in recs:                                                     # no request text in the card
        assert r["instruction"][:60] not in card
    assert summary["labels"] == {"harmful": h, "benign": 30 - h}
    for s in ("train", "validation"):
        import pandas as pd
        assert len(pd.read_parquet(d / "data" / f"{s}.parquet")) == summary["splits"][s]
        assert len((d / "data" / f"{s}.jsonl").read_text().splitlines()) == summary["splits"][s]
    assert (run.path / "figures" / "dataset_composition.png").is_file() and (run.path / "figures" / "dataset_tokens.png").is_file()

def test_bad_lines_become_failures_and_the_rest_is_exported(tmp_path):
    run = write_fixture_run(tmp_path / "run", n=6, seed=0)
    p = run.path / "responses" / "records.jsonl"
    recs = [json.loads(l) for l in p.read_text().splitlines()]
    recs[1]["messages"] = recs[1]["messages"][:1]                     # no answer
    recs[2]["validation"]["ok"] = False
    p.write_text("\n".join(json.dumps(r) for r in recs) + "\n{not json\n" + json.dumps({"id": "x"}) + "\n")
    s = run_dataset(run, DatasetConfig(tokenizer=None, figures=False))
    assert s["exported"] == 4 and s["failures_by_reason"] == {"bad_messages": 1, "invalid_record": 2, "not_validated": 1}

def test_mix_in_from_a_local_file(tmp_path):
    src = write_fixture_run(tmp_path / "src", n=10, seed=5)
    run_dataset(src, DatasetConfig(tokenizer=None, figures=False))
    mix = src.path / "dataset" / "llamafactory" / "agentalign_train.json"
    run = write_fixture_run(tmp_path / "run", n=10, seed=0)
    s = run_dataset(run, DatasetConfig(tokenizer=None, figures=False, mix=[f"{mix}:0.2"]))
    assert s["mix"][0]["asked"] == 2 and s["mixed"] == 2 and s["exported"] == 12
    card = (run.path / "dataset" / "README.md").read_text()
    assert "Third-party tool-use data mixed in" in card

def test_deterministic(tmp_path):
    out = []
    for k in ("a", "b"):
        run = write_fixture_run(tmp_path / k, n=12, seed=4)
        run_dataset(run, DatasetConfig(tokenizer=None, figures=False, validation_share=0.25))
        out.append([(run.path / "dataset" / f).read_bytes() for f in ("data/train.jsonl", "data/validation.jsonl", "records.jsonl",
                                                                      "llamafactory/agentalign_train.json", "README.md")])
    assert out[0] == out[1]

def test_bad_input_is_one_clear_line(tmp_path):
    run = write_fixture_run(tmp_path / "run", n=4, seed=0)
    (tmp_path / "bad.yaml").write_text("dataset:\n  validation_shares: 0.2\n")
    cases = [(("export", "--out", tmp_path / "empty"), "responses/records.jsonl: not found: run the responses stage"),
             (("export", "--out", run.path, "--config", tmp_path / "bad.yaml"), "validation_shares: unknown key"),
             (("export", "--out", run.path, "--mix", "glaive"), "expected NAME:SHARE"),
             (("export", "--out", run.path, "--mix", "glaive:0.2"), "--mix glaive: cannot load llamafactory/glaive_toolcall_en")]
    for args, msg in cases:
        r = cli(*args, timeout=120)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and msg in lines[0], (args, r.stderr[-2000:])

def test_no_validation_share_still_loads(tmp_path):
    "validation_share 0: the empty validation split is left out of the saved DatasetDict (datasets cannot load it back)."
    from datasets import load_from_disk
    run = write_fixture_run(tmp_path, n=6, seed=3)
    summary = run_dataset(run, DatasetConfig(validation_share=0.0, tokenizer=None, figures=False))
    dd = load_from_disk(str(run.path / "dataset" / "hf"))
    assert list(dd) == ["train"] and len(dd["train"]) == summary["exported"] == 6
    assert (run.path / "dataset" / "data" / "validation.jsonl").read_text() == ""
