"""Datasets, commands and device hooks come from plugins exactly as systems do.

A third party's distribution (installed with pip into a target directory, run through the real
command line with that directory on PYTHONPATH) adds a dataset (``physlearn.datasets``), a
sub-command (``physlearn.commands``), a system whose bench fails with its own
:class:`~physlearn.errors.DeviceError` and one that dry-runs itself
(:class:`~physlearn.dryrun.DryRunnable`); the core handles each without knowing it. physlearn's
own datasets and commands register the same way.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
import yaml

from physlearn import registry
from physlearn.config import ConfigError, TaskConfig, parse_config
from physlearn.errors import DeviceError

from .conftest import CONFIGS, load_yaml
from .test_registry import BACKEND, TOY_CONFIG, TOY_MACHINE

BUILTIN_DATASETS = {"xor", "iris", "digits", "regression", "none", "cluster_ising_phases"}

BLOBS = '''
"""A third party's dataset."""
from typing import Literal

import numpy as np
from pydantic import Field

from physlearn.datasets import Dataset, DatasetConfigBase


class BlobsConfig(DatasetConfigBase):
    """Three Gaussian blobs in four dimensions."""

    kind: Literal["blobs"] = "blobs"
    n: int = Field(90, ge=3, le=10_000, description="patterns per split")
    spread: float = Field(0.3, gt=0, description="standard deviation of each blob")

    def n_features(self): return 4
    def n_classes(self): return 3
    def n_targets(self): return None
    def n_train(self): return self.n

    def load(self, seed):
        rng = np.random.default_rng(seed)
        centres = 2.0 * np.eye(3, 4)
        y = rng.integers(0, 3, 2 * self.n)
        x = centres[y] + self.spread * rng.normal(size=(2 * self.n, 4))
        return Dataset("blobs", x[: self.n], y[: self.n], x[self.n :], y[self.n :], 3)
'''

COMMANDS = """
def add_commands(sub):
    sp = sub.add_parser("hello", help="Greet from a plugin.", description="Greet from a plugin.")
    sp.add_argument("--name", default="world")
    sp.set_defaults(func=lambda args: print(f"hello, {args.name}") or 0)
"""

BENCHES = '''
from typing import Literal

from physlearn.dryrun import Check
from physlearn.errors import DeviceError
from plug_physlearn import ToyConfig
from plug_physlearn.machine import ToyMachine


class BenchOnFire(DeviceError, RuntimeError):
    def failure_message(self):
        return f"plug: {self}; call the operator"


class FlakyConfig(ToyConfig):
    """A bench that fails as the run starts."""

    kind: Literal["flaky"] = "flaky"

    def build(self, seed):
        raise BenchOnFire("the bench is on fire")


class DryToy(ToyMachine):
    def dry_run(self, experiment=None):
        return [Check(True, "probe", "answers"), Check(False, "bench", "unplugged")]


class DryToyConfig(ToyConfig):
    """A toy machine that checks itself before a run."""

    kind: Literal["drytoy"] = "drytoy"

    def build(self, seed):
        return DryToy(self.n_in, self.n_out, seed)
'''

ENTRY_POINTS = {
    "physlearn.systems": {
        "toy": "plug_physlearn:ToyConfig",
        "flaky": "plug_physlearn.benches:FlakyConfig",
        "drytoy": "plug_physlearn.benches:DryToyConfig",
    },
    "physlearn.datasets": {"blobs": "plug_physlearn.blobs:BlobsConfig"},
    "physlearn.commands": {
        "hello": "plug_physlearn.commands:add_commands",
        "broken": "plug_physlearn.nowhere:add_commands",
    },
}


@pytest.fixture(scope="module")
def plug_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin distribution ``plug-physlearn`` pip-installed into a target directory."""
    root = tmp_path_factory.mktemp("plug")
    src, package = root / "src", root / "src" / "plug_physlearn"
    package.mkdir(parents=True)
    modules = {
        "__init__.py": TOY_CONFIG.replace("toy_physlearn", "plug_physlearn"),
        "machine.py": TOY_MACHINE,
        "blobs.py": BLOBS,
        "commands.py": COMMANDS,
        "benches.py": BENCHES,
    }
    for file, text in modules.items():
        (package / file).write_text(textwrap.dedent(text))
    (src / "_backend.py").write_text(BACKEND)
    tables = "".join(
        f'\n[project.entry-points."{group}"]\n' + "".join(f'{k} = "{v}"\n' for k, v in eps.items())
        for group, eps in ENTRY_POINTS.items()
    )
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "_backend"\nbackend-path = ["."]\n\n'
        '[project]\nname = "plug-physlearn"\nversion = "0.1"\n' + tables
    )
    site = root / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*pip, "--no-index", "--target", str(site), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return site


def _cli(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``physlearn ARGS`` in a fresh interpreter that sees the plugin."""
    return subprocess.run(
        [sys.executable, "-m", "physlearn.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=cwd,
    )


def _one_line(res: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in res.stderr
    (line,) = res.stderr.strip().splitlines()
    return line


def _experiment(tmp_path: Path, system: str, dataset: dict[str, Any]) -> str:
    raw = {
        "name": system,
        "system": {"kind": system, "n_in": 4, "n_out": 3},
        "task": {"dataset": dataset, "encoding": {"standardize": True}},
        "estimator": {"kind": "ep", "nudging": "centred", "beta": 0.1},
        "optimizer": {"kind": "adam", "lr": 0.05},
        "schedule": {"steps": 30, "batch_size": 16, "eval_every": 10},
        "store": {"root": str(tmp_path / "runs")},
    }
    (tmp_path / f"{system}.yaml").write_text(yaml.safe_dump(raw))
    return f"{system}.yaml"


# --------------------------------------------------------------------------------------------
# Through an installed third-party distribution


@pytest.mark.slow
def test_a_third_party_dataset_is_validated_trained_described_and_resumed(
    plug_site: Path, tmp_path: Path
) -> None:
    config = _experiment(tmp_path, "toy", {"kind": "blobs", "n": 90})
    out = tmp_path / "blobs.zarr"
    run = _cli(plug_site, "run", config, "--out", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(_cli(plug_site, "inspect", str(out), "--json", cwd=tmp_path).stdout)
    assert summary["status"] == "success" and summary["committed_steps"] == 30
    assert summary["metrics"]["test_accuracy"] > 0.6  # it learned (chance: 1/3)
    # the stored config (with its plugin dataset) re-parses in a new process
    assert _cli(plug_site, "resume", str(out), cwd=tmp_path).returncode == 0

    schema = json.loads(_cli(plug_site, "schema", cwd=tmp_path).stdout)
    dataset = schema["$defs"]["TaskConfig"]["properties"]["dataset"]
    assert set(dataset["discriminator"]["mapping"]) == BUILTIN_DATASETS | {"blobs"}
    assert "spread" in schema["$defs"]["BlobsConfig"]["properties"]

    bad = _cli(plug_site, "validate", config, "--set", "task.dataset.spread=-1", cwd=tmp_path)
    assert bad.returncode == 2
    line = _one_line(bad)
    assert "task.dataset.spread: Input should be greater than 0" in line


@pytest.mark.slow
def test_plugin_commands_are_listed_and_run_and_a_broken_one_spoils_only_itself(
    plug_site: Path, tmp_path: Path
) -> None:
    helped = _cli(plug_site, "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    listed = set(re.findall(r"^ {4}(\S+)", helped.stdout, flags=re.MULTILINE))
    assert {"hello", "broken", "lab", "export-spice", "run", "systems"} <= listed
    assert "Greet from a plugin." in helped.stdout

    hello = _cli(plug_site, "hello", "--name", "bench", cwd=tmp_path)
    assert (hello.returncode, hello.stdout) == (0, "hello, bench\n")

    broken = _cli(plug_site, "broken", "--any", "thing", cwd=tmp_path)
    assert broken.returncode == 2
    line = _one_line(broken)
    assert line.startswith("physlearn: error: command 'broken' is unavailable: entry point ")
    assert "(group physlearn.commands) of distribution plug-physlearn 0.1" in line
    assert "cannot be loaded: ModuleNotFoundError" in line

    validate = _cli(plug_site, "validate", str(CONFIGS / "quickstart.yaml"), cwd=tmp_path)
    assert validate.returncode == 0, validate.stderr


def test_a_plugin_device_error_is_its_own_message_and_exit_1(
    plug_site: Path, tmp_path: Path
) -> None:
    config = _experiment(tmp_path, "flaky", {"kind": "iris"})
    res = _cli(plug_site, "run", config, cwd=tmp_path)
    assert res.returncode == 1
    assert _one_line(res) == "plug: the bench is on fire; call the operator"


def test_a_plugin_system_that_dry_runs_itself_reports_its_checks(
    plug_site: Path, tmp_path: Path
) -> None:
    config = _experiment(tmp_path, "drytoy", {"kind": "iris"})
    res = _cli(plug_site, "run", config, "--dry-run", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "  [ ok ] probe: answers\n  [FAIL] bench: unplugged\n" in res.stdout
    assert "dry run FAILED: 1 of 2 checks" in res.stdout
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------------------------
# In process: physlearn's own datasets and device errors


def test_physlearn_registers_its_datasets_through_entry_points() -> None:
    assert set(registry.DATASETS.kinds()) == BUILTIN_DATASETS
    for kind, cls in registry.DATASETS.config_classes().items():
        assert registry.kind_literal(cls) == kind
        assert registry.DATASETS.entry(kind).distribution.startswith("physlearn ")


@pytest.mark.parametrize("kind", sorted(BUILTIN_DATASETS))
def test_every_dataset_kind_round_trips_as_stored(kind: str) -> None:
    task = TaskConfig.model_validate({"dataset": {"kind": kind}})
    assert type(task.dataset) is registry.DATASETS.config_class(kind)
    stored = json.loads(json.dumps(task.model_dump(mode="json")))  # as store.attrs keeps it
    assert TaskConfig.model_validate(stored) == task


def test_an_unknown_dataset_kind_names_the_field_and_the_installed_kinds() -> None:
    raw = load_yaml("quickstart.yaml")
    raw["task"]["dataset"] = {"kind": "mnist"}
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "q.yaml")
    message = str(err.value)
    assert message.startswith("q.yaml is not a valid experiment: task.dataset: unknown kind ")
    assert all(repr(k) in message for k in BUILTIN_DATASETS) and "\n" not in message


def test_a_dataset_entry_point_must_name_a_dataset_config() -> None:
    target = "physlearn.configbase:StrictModel"
    ep = EntryPoint("strict", target, registry.DATASETS.name)
    found = registry.Entry("strict", target, "(unknown distribution)", ep, registry.DATASETS)
    with pytest.raises(registry.RegistryError) as err:
        found.load()
    assert str(err.value) == (
        f"entry point strict = {target!r} (group physlearn.datasets) of distribution "
        "(unknown distribution) names <class 'physlearn.configbase.StrictModel'>, not a "
        "subclass of physlearn.datasets.DatasetConfigBase"
    )


def test_validating_a_config_imports_no_other_dataset() -> None:
    """The core's dataset module used to import the quantum datasets (and so the quantum
    simulator's package) into every process that read a config."""
    code = (
        "import sys; from physlearn.config import load_config; "
        f"load_config({str(CONFIGS / 'quickstart.yaml')!r}); "
        "print('physlearn.simulators.quantum' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (res.returncode, res.stdout) == (0, "False\n"), res.stderr


def test_the_bench_errors_are_device_errors_with_the_operator_messages() -> None:
    """drivers' errors reach the command line through the core's DeviceError; the messages
    are the ones the command line printed when it knew the drivers' classes."""
    from physlearn.drivers.errors import EnvelopeViolation, InstrumentFault, SafeStateError

    after = (
        "\n  every source it drove was ramped to its safe state; a run store, if one was "
        "created, keeps every committed step (`physlearn inspect STORE`; fix the cause, then "
        "`physlearn resume STORE`)."
    )
    fault = InstrumentFault("src: no reply", "src")
    assert isinstance(fault, DeviceError) and isinstance(fault, RuntimeError)
    assert fault.failure_message() == "physlearn: the run stopped: src: no reply" + after
    envelope = EnvelopeViolation("inputs: 12 V > 10 V")
    assert isinstance(envelope, DeviceError) and isinstance(envelope, ValueError)
    assert envelope.failure_message() == (
        "physlearn: the run refused by the safety envelope: inputs: 12 V > 10 V" + after
    )
    assert SafeStateError("src.ch01 at 3 V").failure_message() == (
        "physlearn: src.ch01 at 3 V\n  THE BENCH IS NOT CONFIRMED SAFE: switch the listed "
        "sources off by hand. A run store keeps every committed step (`physlearn resume STORE`)."
    )
