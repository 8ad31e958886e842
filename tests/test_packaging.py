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


# ---- the shape of the code: imports point down, modules hold one job, notebook cells stay short ---------------------
import json

def test_no_import_cycles():
    "Every import of the package (module level and inside functions), read by grimp: no module reaches one that imports it."
    import grimp
    g = grimp.build_graph("agentalign", include_external_packages=False)
    cycles = set()
    for a in sorted(g.modules):
        for b in g.find_modules_directly_imported_by(a):
            chain = g.find_shortest_chain(importer=b, imported=a)
            if chain: cycles.add(" -> ".join((a, *chain)))
    assert len(g.modules) > 30 and "agentalign.llm.local" in g.modules, sorted(g.modules)
    assert not cycles, sorted(cycles)

def test_modules_hold_one_job_each():
    "A module past 600 lines holds two jobs."
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / "agentalign").rglob("*.py") if p.name != "_modidx.py"}
    assert len(sizes) > 30
    assert {k: v for k, v in sizes.items() if v > 600} == {}

def test_notebook_code_cells_stay_short():
    "No code cell over 80 lines (nbdev's own notebooks: median 6, longest 70)."
    long = {}
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        for i, c in enumerate(cells):
            n = len("".join(c["source"]).splitlines())
            if c["cell_type"] == "code" and n > 80: long[f"{nb.name} cell {i}"] = n
    assert long == {}
