"The built wheel carries the package, its subpackages and the curated data; a wheel install finds its data."
import subprocess, sys, zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_wheel_contents(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    whl = next(tmp_path.glob("agentalign-*.whl"))
    names = set(zipfile.ZipFile(whl).namelist())
    for mod in ("core", "taxonomy", "cli"):
        assert f"agentalign/{mod}.py" in names
    assert "agentalign/_data/upstream/synthetic_tools.json" in names
    assert "agentalign/_data/upstream/LICENSE" in names and "agentalign/_data/PROVENANCE.md" in names
    assert "agentalign/_nbs/11_pipeline.ipynb" in names and "agentalign/_nbs/index.ipynb" in names   # what `agentalign run` replays
    # unpacked as site-packages would be, the package finds its bundled data and loads the taxonomy
    site = tmp_path / "site"; zipfile.ZipFile(whl).extractall(site)
    code = ("from agentalign.taxonomy import load_taxonomy; from agentalign.core import data_dir; from agentalign.pipeline import notebooks_dir\n"
            "print(data_dir()); print(len(load_taxonomy().tools)); print(notebooks_dir())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(site / "agentalign" / "_data"), "86", str(site / "agentalign" / "_nbs")]
