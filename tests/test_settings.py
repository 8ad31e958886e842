"""One settings path: a config file means the same thing to a stage's own command and to `agentalign run`."""
import json, re
from pathlib import Path
import pytest
from typer.testing import CliRunner
from agentalign.cli import load_commands
from agentalign.core import app

load_commands()
ROOT = Path(__file__).resolve().parents[1]

# stage of `agentalign run` -> the stage command and the options that make it the same stage
COMMANDS = {"taxonomy": ["taxonomy"], "chains": ["chains"], "instructions": ["instructions"], "quality": ["filter"],
            "responses": ["respond"], "dataset": ["export"], "sft": ["sft"],
            "intent_base": ["intent", "--label", "base"], "intent_sft": ["intent", "--label", "sft", "--model", "sft/model"],
            "pairs": ["pairs"], "dpo": ["dpo"], "intent_dpo": ["intent", "--label", "dpo", "--model", "dpo/model"],
            "agentharm_dpo": ["agentharm", "--label", "dpo", "--model", "dpo/model"],
            "agentharm_base": ["agentharm", "--label", "base"], "agentharm_sft": ["agentharm", "--label", "sft", "--model", "sft/model"]}

ENDPOINT = 'backend = "openai"\nmodel = "served-model"\nbase_url = "http://127.0.0.1:9/v1"\n'
CONFIGS = {
    "default_role_only": "[roles.default]\n" + ENDPOINT,
    "role_vs_stage_table": ("[pipeline]\nstages = [\"taxonomy\", \"chains\", \"instructions\", \"quality\", \"responses\", \"dataset\", \"sft\", \"intent_base\", \"intent_sft\", \"pairs\", \"dpo\", \"intent_dpo\", \"agentharm_base\", \"agentharm_sft\", \"agentharm_dpo\"]\n"
                            "seed = 11\nbase_model = \"embedded\"\n"
                            "[roles.default]\n" + ENDPOINT + "concurrency = 3\n"
                            "[roles.judge]\nmodel = \"judge-from-role\"\n"
                            "[quality]\njudge = { model = \"judge-from-table\" }\ncalibration_limit = 4\n"
                            "[roles.chain_writer]\nmodel = \"chain-writer\"\n[chains]\nseed = 5\n"
                            "[roles.agentharm_judge]\nbackend = \"openai\"\nmodel = \"gpt-4o\"\n"
                            "[responses]\nagent = { model = \"agent-from-table\" }\n[sft]\nmax_steps = 3\n"),
    "yaml_and_pipeline": "pipeline:\n  seed: 4\nroles:\n  refuser:\n    model: r\ninstructions:\n  counts: {harmful: 1, benign: 2, borderline: 0}\n",
}

def invoke(args: list[str]) -> dict:
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, f"{args}: {r.output}"
    return json.loads(r.output)

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cfg")
    out = {}
    for name, text in CONFIGS.items():
        p = d / (name + (".yaml" if name.startswith("yaml") else ".toml")); p.write_text(text); out[name] = p
    return out

@pytest.mark.parametrize("preset", ["tiny", "none"])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("stage", list(COMMANDS))
def test_stage_command_and_run_resolve_the_same_settings(stage, config, preset, files, tmp_path):
    ran = invoke(["run", "--out", str(tmp_path / "run"), "--preset", preset, "--config", str(files[config]), "--show-settings"])
    if stage not in ran: pytest.skip(f"{stage} is not in [pipeline] stages of this configuration")
    alone = invoke([*COMMANDS[stage], "--out", str(tmp_path / "run"), "--preset", preset, "--config", str(files[config]), "--show-settings"])
    assert alone == ran[stage]

def test_the_table_beats_the_role_and_the_role_beats_default(files, tmp_path):
    ran = invoke(["run", "--out", str(tmp_path), "--preset", "none", "--config", str(files["role_vs_stage_table"]), "--show-settings"])
    assert ran["quality"]["judge"]["model"] == "judge-from-table"
    assert ran["responses"]["refuser"]["model"] == "served-model" and ran["responses"]["agent"]["model"] == "agent-from-table"
    assert ran["chains"]["writer"]["model"] == "chain-writer" and ran["chains"]["seed"] == 5 and ran["instructions"]["seed"] == 11
    assert ran["agentharm_base"]["judge"]["model"] == "gpt-4o" and ran["agentharm_base"]["model"] == "embedded"
    assert ran["instructions"]["writer"]["concurrency"] == 3

@pytest.mark.parametrize("args,field,value", [
    (["filter", "--judge-model", "typed"], ("judge", "model"), "typed"),
    (["respond", "--agent-model", "typed"], ("agent", "model"), "typed"),
    (["instructions", "--seed", "99"], ("seed",), 99),
    (["sft", "--max-steps", "7"], ("max_steps",), 7),
    (["agentharm", "--label", "base", "--limit", "2"], ("limit",), 2),
])
def test_a_command_line_option_overrides_exactly_its_field(args, field, value, files, tmp_path):
    stage = {"filter": "quality", "respond": "responses", "instructions": "instructions", "sft": "sft", "agentharm": "agentharm_base"}[args[0]]
    ran = invoke(["run", "--out", str(tmp_path), "--preset", "tiny", "--config", str(files["role_vs_stage_table"]), "--show-settings"])[stage]
    alone = invoke([*args, "--out", str(tmp_path), "--preset", "tiny", "--config", str(files["role_vs_stage_table"]), "--show-settings"])
    expected = json.loads(json.dumps(ran)); node = expected
    for k in field[:-1]: node = node[k]
    assert node[field[-1]] != value
    node[field[-1]] = value
    assert alone == expected

def test_a_new_base_url_does_not_inherit_the_presets_key_variable(tmp_path):
    f = tmp_path / "local.toml"; f.write_text('[pipeline]\nbase_model = "embedded"\n[roles.default]\nmodel = "m"\nbase_url = "http://127.0.0.1:8/v1"\n')
    ran = invoke(["run", "--out", str(tmp_path), "--preset", "paper", "--config", str(f), "--show-settings"])
    for stage, role in [("chains", "writer"), ("instructions", "writer"), ("quality", "judge"), ("responses", "agent"), ("agentharm_base", "judge")]:
        assert ran[stage][role]["api_key_env"] is None and ran[stage][role]["base_url"] == "http://127.0.0.1:8/v1", (stage, ran[stage][role])

def test_the_paper_preset_without_a_base_model_is_one_line(tmp_path):
    r = CliRunner().invoke(app, ["run", "--out", str(tmp_path), "--preset", "paper", "--show-settings"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "[pipeline] base_model: preset paper names no model" in r.output, r.output

@pytest.mark.parametrize("text,message", [
    ("[qualty]\nseed = 1\n", "unknown table [qualty]"),
    ("[roles.jduge]\nmodel = 'x'\n", "unknown role [roles.jduge]"),
    ("[sft]\nsteps = 3\n", "[sft]: steps: unknown key"),
])
@pytest.mark.parametrize("command", [["filter"], ["export"], ["run"]])
def test_a_typo_anywhere_is_one_line_from_every_command(text, message, command, tmp_path):
    f = tmp_path / "bad.toml"; f.write_text(text)
    r = CliRunner().invoke(app, [*command, "--out", str(tmp_path / "r"), "--config", str(f), "--show-settings"])
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1, r.output

def test_every_command_in_the_readme_exists():
    text = (ROOT / "README.md").read_text()
    cmds = sorted(set(re.findall(r"^\s*(?:\S+=\S+\s+)*agentalign ([a-z][a-z-]+)", text, flags=re.M)))
    assert {"run", "taxonomy", "filter", "respond", "export", "sft", "agentharm", "report", "serve"} <= set(cmds), cmds
    for c in cmds:
        r = CliRunner().invoke(app, [c, "--help"])
        assert r.exit_code == 0, f"agentalign {c}: {r.output}"

@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_the_shipped_configs_resolve_on_the_small_preset(config, tmp_path):
    "Each config file under configs/ is a layer over the small preset that every stage accepts, and it changes what it says."
    import tomllib
    ran = invoke(["run", "--out", str(tmp_path), "--preset", "small", "--config", str(config), "--show-settings"])
    for section, table in tomllib.loads(config.read_text()).items():
        assert section in ran, (config.name, section, sorted(ran))                   # a stage of the run, by its section name
        for key, value in table.items(): assert ran[section][key] == value, (config.name, section, key, ran[section][key])
