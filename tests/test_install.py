"""The package as a wheel: built from the sources, installed into a fresh virtual environment outside
the repository, and run there (the way a cluster environment or a container gets it)."""

import json
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from test_workflow import TINY

REPO = Path(__file__).resolve().parents[1]


def run(*args, cwd, timeout=600):
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def test_the_wheel_installs_and_runs_outside_the_repository(tmp_path):
    source = tmp_path / "source"  # the tracked sources the wheel is built from, nothing else
    shutil.copytree(REPO / "onion", source / "onion", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
        source, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("onion-*.whl"))
    packed = set(zipfile.ZipFile(wheel).namelist())
    assert {"onion/model/rnn.py", "onion/interventions/das.py", "onion/probes/train.py",
            "onion/report/paper.py", "onion/config.schema.yaml"} <= packed

    # A fresh environment whose only onion is the wheel's; the dependencies (PyTorch and the rest)
    # are this environment's, reached through a .pth file that lists its site-packages as plain
    # paths (its own .pth files, the editable install's among them, are not read).
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
    deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    Path(purelib.stdout.strip(), "dependencies.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel, cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(python, "-c", "import onion; print(onion.__file__)", cwd=elsewhere).stdout.strip()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(REPO), where
    assert "make-dataset" in run(python, "-m", "onion", "--help", cwd=elsewhere).stdout

    # the tests' tiny dataset, and the repository's config checked against the packaged schema
    run(python, "-m", "onion", "make-dataset", "--data", json.dumps(TINY["data"]), "--train", "train.parquet",
        "--valid", "valid.parquet", "--das-valid", "das_valid.parquet", "--das-train", "das_train.parquet",
        cwd=elsewhere)
    assert len(pd.read_parquet(elsewhere / "valid.parquet")) == TINY["data"]["n_valid"]
    shutil.copy(REPO / "config.yaml", elsewhere / "config.yaml")
    run(python, "-m", "onion", "check-config", "config.yaml", cwd=elsewhere)


def _bounds(requirements) -> dict:
    """{name: lower bound or ''} of requirement strings such as 'numpy>=1.24' ('torch' is 'pytorch')."""
    pairs = (r.split("#")[0].replace(" ", "").partition(">=")[::2] for r in requirements if isinstance(r, str))
    return {{"torch": "pytorch"}.get(name, name): bound for name, bound in pairs}


def test_the_conda_environment_has_the_package_and_its_lower_bounds():
    """`--sdm conda`: the environment asks for what pyproject.toml asks for (the workflow's own
    dependencies, snakemake and pygments, aside) and installs the package from this checkout."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    import yaml

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "workflow/envs/onion.yaml").read_text())["dependencies"]
    wanted = {k: v for k, v in _bounds(project["dependencies"]).items() if k not in ("snakemake", "pygments")}
    assert {k: v for k, v in _bounds(env).items() if k not in ("python", "pip")} == wanted
    assert _bounds(env)["python"] == project["requires-python"].removeprefix(">=")
    pip = next(d["pip"] for d in env if isinstance(d, dict))
    checkout = (REPO / "workflow/envs" / pip[0].split()[-1]).resolve()  # relative to the file, as conda runs pip
    assert pip[0].startswith("--editable ") and (checkout / "pyproject.toml").exists() and checkout == REPO
