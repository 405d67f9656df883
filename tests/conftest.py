"""Shared fixtures: small, fast experiment configs derived from the shipped ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import settings

# CI draws the same examples on every run (a red CI names a reproducible example); a developer's
# run keeps exploring new ones, and failures it finds are kept in .hypothesis/ and fixed.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device-address",
        default=None,
        help="VISA address of a real instrument bench; enables tests marked 'hardware'.",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--device-address"):
        return
    skip = pytest.mark.skip(reason="real hardware: opt in with --device-address=VISA_ADDRESS")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


def load_yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIGS / name).read_text())


@pytest.fixture
def quick_raw(tmp_path: Path) -> dict[str, Any]:
    """The quickstart config, shortened for tests, writing under tmp_path."""
    raw = load_yaml("quickstart.yaml")
    raw["schedule"]["steps"] = 24
    raw["schedule"].pop("epochs", None)
    raw["schedule"]["eval_every"] = 8
    raw["store"] = {**raw.get("store", {}), "root": str(tmp_path / "runs"), "flush_every": 4}
    return raw


@pytest.fixture
def write_config(tmp_path: Path):
    def _write(raw: dict[str, Any], name: str = "exp.yaml") -> Path:
        p = tmp_path / name
        p.write_text(yaml.safe_dump(raw, sort_keys=False))
        return p

    return _write


def run_cli(*args: str, timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess[str]:
    """The real command line in a subprocess (no terminal, so no progress bar)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "physlearn.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=kw.get("cwd", ROOT),
    )
