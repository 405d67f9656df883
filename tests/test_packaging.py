"""The distribution as a user gets it: a wheel (not an editable install) in a fresh virtual
environment outside the source tree imports every module and trains the quickstart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

IMPORT_ALL = """
import importlib, json, pkgutil, sys
import physlearn
names = []
for info in pkgutil.walk_packages(physlearn.__path__, "physlearn."):
    if not info.name.endswith(".__main__"):  # runs the CLI
        importlib.import_module(info.name)
    names.append(info.name)
print(json.dumps({"file": physlearn.__file__, "modules": names}))
"""


def _source_modules() -> set[str]:
    """Every module the source tree holds, under the name it installs as."""
    roots = {"physlearn": "physlearn", "drivers": "physlearn.drivers"}
    roots["simulators"] = "physlearn.simulators"
    names = set()
    for folder, prefix in roots.items():
        for path in (REPO / folder).rglob("*.py"):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            names.add(".".join([prefix, *parts]))
    return names - {"physlearn"}


def _source_copy(dest: Path) -> Path:
    """The files git would ship (tracked, or new and not ignored) copied to ``dest``: a build
    there sees neither ignored leftovers (a stale ``build/`` would put deleted modules into the
    wheel) nor anything outside the tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_wheel_installs_every_module_and_trains_the_quickstart(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    source = _source_copy(tmp_path / "source")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(source)]
    built = _run(build, tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("physlearn-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    installed = _run([str(python), "-m", "pip", "install", "-q", f"{wheel}[lab]"], tmp_path)
    assert installed.returncode == 0, installed.stderr[-2000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    imported = _run([str(python), "-c", IMPORT_ALL], work)
    assert imported.returncode == 0, imported.stderr[-2000:]
    found = json.loads(imported.stdout.strip().splitlines()[-1])
    assert Path(found["file"]).is_relative_to(env_dir), found["file"]
    missing = _source_modules() - set(found["modules"])
    assert not missing, f"modules the wheel does not ship: {sorted(missing)}"

    store = work / "quickstart.zarr"
    cli = env_dir / "bin" / "physlearn"
    trained = _run(
        [str(cli), "run", str(REPO / "configs" / "quickstart.yaml"), "--out", str(store)], work
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    summary = _run([str(cli), "inspect", str(store), "--json"], work)
    assert summary.returncode == 0, summary.stderr[-2000:]
    facts = json.loads(summary.stdout)
    assert facts["status"] == "success"
    assert facts["metrics"]["test_accuracy"] >= 0.9
