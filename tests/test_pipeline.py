"`agentalign run` as a user runs it: bad input gives one line; the tiny preset runs every stage end to end."
import subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "agentalign"

def run(*args, env=None, timeout=300):
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)

def one_line_error(r, needle):
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], err[-2000:])
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err
    assert "Traceback" not in r.stdout + r.stderr

@pytest.mark.parametrize("body,suffix,needle", [
    ("[pipeline\n", ".toml", "invalid TOML"),
    ("pipeline: [1, 2\n", ".yaml", "invalid YAML"),
    ("[pipeline]\nstagez = []\n", ".toml", "[pipeline]: stagez: unknown key"),
    ("[pipeline]\nstages = ['taxonomy', 'nonsense']\n", ".toml", "unknown stage 'nonsense'"),
    ("[roles.judge]\nmodle = 'x'\n", ".toml", "[roles.judge]: unknown key modle"),
    ("[roles.grader]\nmodel = 'x'\n", ".toml", "unknown role [roles.grader]"),
    ("[instructionz]\n", ".toml", "unknown section [instructionz]"),
    ("x = 1\n", ".ini", "config files are TOML"),
])
def test_bad_config_is_one_line(tmp_path, body, suffix, needle):
    cfg = tmp_path / f"c{suffix}"; cfg.write_text(body)
    one_line_error(run("run", "--out", tmp_path / "r", "--preset", "tiny", "--config", cfg), needle)

def test_bad_options_are_one_line(tmp_path):
    one_line_error(run("run", "--out", tmp_path / "r", "--preset", "huge"), "unknown preset 'huge'")
    one_line_error(run("run", "--out", tmp_path / "r", "--preset", "tiny", "--config", tmp_path / "none.toml"), "none.toml: config file not found")
    one_line_error(run("run", "--out", tmp_path / "r", "--preset", "tiny", "--only", "nope"), "--only: unknown stage 'nope'")
    (tmp_path / "file").write_text("x")
    one_line_error(run("run", "--out", tmp_path / "file", "--preset", "tiny"), "not a folder")
