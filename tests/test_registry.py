"""Systems register by ``physlearn.systems`` entry points (physlearn.registry).

The end-to-end tests install real distributions with pip into a target directory and run the
real command line in a subprocess with that directory on PYTHONPATH: a third party's system is
listed, validated, trained, inspected and resumed exactly like physlearn's own, and a broken
entry point is one clear line naming it and its distribution.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from physlearn import registry
from physlearn.config import ConfigError, json_schema, parse_config
from physlearn.configbase import SystemConfigBase

from .conftest import CONFIGS, ROOT, load_yaml

BUILTIN = {"resistor", "diode_resistor", "quantum", "rydberg", "ions", "elastic", "xy", "station"}

# A PEP 517 backend of a few lines, shipped inside each test package, so that pip builds and
# installs it with --no-build-isolation from nothing but the standard library (no package
# index, no setuptools/wheel in the venv): the installed metadata -- entry_points.txt from the
# package's own pyproject.toml -- is what any build backend writes.
BACKEND = """
import base64, hashlib, pathlib, tomllib, zipfile

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    project = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
    name, version = project["name"].replace("-", "_"), project["version"]
    info = f"{name}-{version}.dist-info"
    files = {str(p): p.read_bytes() for p in sorted(pathlib.Path(name).rglob("*.py"))}
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\\nName: {project['name']}\\nVersion: {version}\\n"
    ).encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    groups = project.get("entry-points", {})
    files[f"{info}/entry_points.txt"] = "".join(
        f"[{g}]\\n" + "".join(f"{k} = {v}\\n" for k, v in eps.items()) + "\\n"
        for g, eps in groups.items()
    ).encode()
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(data)}")
    files[f"{info}/RECORD"] = ("\\n".join(record + [f"{info}/RECORD,,"]) + "\\n").encode()
    wheel = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(pathlib.Path(wheel_directory) / wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel
"""

TOY_CONFIG = '''
"""A third party's machine for physlearn: one config class, one entry point."""
from typing import Literal
from pydantic import Field
from physlearn.configbase import SystemConfigBase

class ToyConfig(SystemConfigBase):
    """A toy linear spring machine: outputs s = W x at equilibrium.

    Energy E = |s|^2 / 2 - s . W x; a target nudge adds beta |s - t|^2 / 2."""

    kind: Literal["toy"] = Field("toy", description="system kind: toy spring machine")
    n_in: int = Field(4, ge=1, le=64, description="input channels")
    n_out: int = Field(3, ge=1, le=64, description="outputs")

    def input_size(self) -> int:
        return self.n_in

    def output_size(self) -> int:
        return self.n_out

    def build(self, seed: int):
        from toy_physlearn.machine import ToyMachine
        return ToyMachine(self.n_in, self.n_out, seed)
'''

TOY_MACHINE = """
import numpy as np
from physlearn.system import Equilibrium, ParameterGroup, PhysicalSystem, Port

class ToyMachine(PhysicalSystem):
    supported_nudges = frozenset({"target", "error", "clamp"})
    native_cost = "mse"

    def __init__(self, n_in, n_out, seed):
        self._group = ParameterGroup("weights", (n_out, n_in), ("out", "in"), -5.0, 5.0, "1")
        self._w = self._group.uniform((-0.1, 0.1), seed)

    @property
    def parameter_groups(self):
        return (self._group,)

    @property
    def inputs(self):
        return Port(self._group.shape[1], "1")

    @property
    def outputs(self):
        return Port(self._group.shape[0], "1")

    def set_parameters(self, params):
        w = np.array(params["weights"], dtype=np.float64)
        if w.shape != self._group.shape or not np.all((w >= -5.0) & (w <= 5.0)):
            raise ValueError("weights: wrong shape or outside [-5, 5]")
        self._w = w
        return self.get_parameters()

    def get_parameters(self):
        return {"weights": self._w.copy()}

    def equilibrate(self, inputs, nudge=None, warm_start=None, rng=None):
        x = np.asarray(inputs, dtype=np.float64)
        drive = x @ self._w.T
        s = drive
        if nudge is not None:
            v = nudge.checked_values(*s.shape)
            beta = complex(nudge.beta)
            if beta.imag:
                raise ValueError("the toy machine takes real nudges only")
            if nudge.kind == "target":
                s = (drive + beta.real * v) / (1.0 + beta.real)
            elif nudge.kind == "error":
                s = drive - beta.real * v
            else:
                s = v
        batch = x.shape[0]
        return Equilibrium(
            outputs=s,
            conjugates={"weights": -s[:, :, None] * x[:, None, :]},
            energy=0.5 * np.sum(s**2, axis=1) - np.sum(s * drive, axis=1),
            residual=np.zeros(batch),
            iterations=np.zeros(batch, dtype=np.int64),
            converged=np.ones(batch, dtype=bool),
        )
"""

BROKEN = '''
from typing import Literal
from physlearn.configbase import SystemConfigBase

class MisnamedConfig(SystemConfigBase):
    """Registered as 'misnamed' but its kind literal says 'other'."""
    kind: Literal["other"] = "other"
    def input_size(self): return 1
    def output_size(self): return 1
    def build(self, seed): raise NotImplementedError

class NotAConfig:
    """Not a pydantic config at all."""
'''


def _install(root: Path, name: str, modules: dict[str, str], systems: dict[str, str]) -> Path:
    """Write a package ``name`` (``modules``: file name -> source) whose pyproject declares
    ``systems`` as physlearn.systems entry points, pip-install it into ``root/site``, return
    the site directory."""
    src = root / "src"
    package = src / name.replace("-", "_")
    package.mkdir(parents=True)
    for file, text in modules.items():
        (package / file).write_text(textwrap.dedent(text))
    (src / "_backend.py").write_text(BACKEND)
    eps = "".join(f'{k} = "{v}"\n' for k, v in systems.items())
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "_backend"\nbackend-path = ["."]\n\n'
        f'[project]\nname = "{name}"\nversion = "0.1"\n\n'
        f'[project.entry-points."physlearn.systems"]\n{eps}'
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


def _cli(sites: list[Path], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``physlearn ARGS`` in a fresh interpreter that sees the packages installed in ``sites``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(s) for s in sites)}
    return subprocess.run(
        [sys.executable, "-m", "physlearn.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _install(
        tmp_path_factory.mktemp("toy"),
        "toy-physlearn",
        {"__init__.py": TOY_CONFIG, "machine.py": TOY_MACHINE},
        {"toy": "toy_physlearn:ToyConfig"},
    )


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _install(
        tmp_path_factory.mktemp("broken"),
        "broken-physlearn",
        {"__init__.py": BROKEN},
        {
            "misnamed": "broken_physlearn:MisnamedConfig",
            "notaconfig": "broken_physlearn:NotAConfig",
            "unimportable": "broken_physlearn.missing:Config",
        },
    )


def _toy_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "name": "toy",
        "system": {"kind": "toy", "n_in": 4, "n_out": 3},
        "task": {"dataset": {"kind": "iris"}, "encoding": {"standardize": True}},
        "estimator": {"kind": "ep", "nudging": "centred", "beta": 0.1},
        "optimizer": {"kind": "adam", "lr": 0.05},
        "schedule": {"steps": 30, "batch_size": 16, "eval_every": 10},
        "store": {"root": str(tmp_path / "runs")},
    }


@pytest.mark.slow
def test_an_installed_third_party_system_is_listed_trained_and_resumed(
    toy_site: Path, tmp_path: Path
) -> None:
    listed = _cli([toy_site], "systems", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {r["kind"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == BUILTIN | {"toy"}
    assert rows["toy"]["config"] == "toy_physlearn:ToyConfig"
    assert rows["toy"]["distribution"] == "toy-physlearn 0.1"
    assert (
        rows["toy"]["description"] == "A toy linear spring machine: outputs s = W x at equilibrium."
    )
    assert rows["resistor"]["distribution"].startswith("physlearn ")
    table = _cli([toy_site], "systems", cwd=tmp_path)
    assert table.returncode == 0 and "toy_physlearn:ToyConfig" in table.stdout

    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(_toy_config(tmp_path)))
    out = tmp_path / "toy.zarr"
    run = _cli([toy_site], "run", "toy.yaml", "--out", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    inspected = _cli([toy_site], "inspect", str(out), "--json", cwd=tmp_path)
    summary = json.loads(inspected.stdout)
    assert summary["status"] == "success" and summary["system"] == "toy"
    assert summary["committed_steps"] == summary["total_steps"] == 30
    assert summary["metrics"]["test_accuracy"] > 0.6  # it learned (chance: 1/3)
    # the stored config re-parses in a new process (resume of a finished run: nothing to do)
    assert _cli([toy_site], "resume", str(out), cwd=tmp_path).returncode == 0

    schema = json.loads(_cli([toy_site], "schema", cwd=tmp_path).stdout)
    mapping = schema["properties"]["system"]["discriminator"]["mapping"]
    assert set(mapping) == BUILTIN | {"toy"}
    assert "n_in" in schema["$defs"]["ToyConfig"]["properties"]


def test_without_the_package_its_kind_is_unknown_and_the_installed_ones_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from physlearn.cli import main

    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(_toy_config(tmp_path)))
    assert main(["validate", str(tmp_path / "toy.yaml")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "system: unknown kind 'toy'" in line
    assert all(repr(k) in line for k in BUILTIN)


def _one_line(res: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in res.stderr
    (line,) = res.stderr.strip().splitlines()
    return line


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        (
            "misnamed",
            "MisnamedConfig has kind literal 'other'; it must be kind: Literal['misnamed']",
        ),
        ("notaconfig", "not a subclass of physlearn.configbase.SystemConfigBase"),
        ("unimportable", "cannot be loaded: ModuleNotFoundError: No module named"),
    ],
)
def test_a_broken_entry_point_is_one_line_naming_it(
    broken_site: Path, tmp_path: Path, kind: str, problem: str
) -> None:
    raw = load_yaml("quickstart.yaml")
    raw["system"] = {"kind": kind}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    res = _cli([broken_site], "validate", "bad.yaml", cwd=tmp_path)
    assert res.returncode == 2
    line = _one_line(res)
    assert line.startswith("physlearn: error: bad.yaml is not a valid experiment: system: ")
    assert f"entry point {kind} = " in line and "distribution broken-physlearn 0.1" in line
    assert problem in line


@pytest.mark.slow
def test_a_broken_plugin_spoils_only_its_own_kinds(broken_site: Path, tmp_path: Path) -> None:
    ok = _cli([broken_site], "validate", str(CONFIGS / "quickstart.yaml"), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    listed = _cli([broken_site], "systems", "--json", cwd=tmp_path)
    assert listed.returncode == 2
    assert {r["kind"] for r in json.loads(listed.stdout)} == BUILTIN
    lines = listed.stderr.strip().splitlines()
    assert len(lines) == 3 and "Traceback" not in listed.stderr
    for kind, line in zip(["misnamed", "notaconfig", "unimportable"], lines, strict=True):
        assert line.startswith(f"physlearn: error: entry point {kind} = ")
    schema = _cli([broken_site], "schema", cwd=tmp_path)
    assert schema.returncode == 2 and "entry point misnamed = " in _one_line(schema)


@pytest.mark.slow
def test_a_kind_registered_twice_names_both_distributions(
    toy_site: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("dup")
    site = _install(
        tmp, "dup-physlearn", {"__init__.py": "X = 1\n"}, {"resistor": "dup_physlearn:X"}
    )
    res = _cli([site, toy_site], "validate", str(CONFIGS / "quickstart.yaml"), cwd=tmp)
    assert res.returncode == 2
    line = _one_line(res)
    assert "system kind 'resistor' is registered more than once" in line
    assert "distribution dup-physlearn 0.1" in line and "distribution physlearn " in line


# --------------------------------------------------------------------------------------------
# In process: physlearn's own systems


def test_physlearn_registers_its_systems_through_entry_points_only() -> None:
    assert set(registry.kinds()) == BUILTIN
    for kind, cls in registry.config_classes().items():
        assert registry.kind_literal(cls) == kind
        assert registry.entry(kind).distribution.startswith("physlearn ")
        assert registry.description(cls)
    source = (ROOT / "physlearn" / "config.py").read_text()
    assert "physlearn.simulators" not in source and "physlearn.drivers" not in source


def test_validating_a_config_imports_only_its_own_system() -> None:
    code = (
        "import sys\n"
        "from physlearn.config import load_config\n"
        "before = {m for m in sys.modules if m.startswith(('physlearn.simulators.', "
        "'physlearn.drivers.'))}\n"
        f"load_config({str(CONFIGS / 'quickstart.yaml')!r})\n"
        "after = {m for m in sys.modules if m.startswith(('physlearn.simulators.', "
        "'physlearn.drivers.', 'qcodes', 'scipy'))}\n"
        "import json; print(json.dumps(sorted(after - before)))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [
        "physlearn.simulators.graphs",
        "physlearn.simulators.graphs.config",
        "physlearn.simulators.resistor",
        "physlearn.simulators.resistor.config",
    ]


def test_schema_describes_every_installed_kind() -> None:
    schema = json_schema()
    system = schema["properties"]["system"]
    assert system["discriminator"]["propertyName"] == "kind"
    assert set(system["discriminator"]["mapping"]) == set(registry.kinds())
    assert len(system["oneOf"]) == len(registry.kinds())
    for ref in system["discriminator"]["mapping"].values():
        assert ref.removeprefix("#/$defs/") in schema["$defs"]


QUICK = load_yaml("quickstart.yaml")
EXPERIMENTS = sorted(p.name for p in CONFIGS.glob("*.yaml") if "system" in load_yaml(p.name))


def test_the_shipped_experiments_cover_every_builtin_file_kind() -> None:
    assert len(EXPERIMENTS) >= 12
    kinds = {load_yaml(name)["system"]["kind"] for name in EXPERIMENTS}
    assert kinds >= {"resistor", "diode_resistor", "quantum", "rydberg", "ions", "xy", "station"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_shipped_config_validates_and_round_trips(name: str) -> None:
    cfg = parse_config(load_yaml(name), name)
    assert type(cfg.system) is registry.config_class(cfg.system.kind)
    stored = json.loads(json.dumps(cfg.model_dump(mode="json")))  # as store.attrs keeps it
    assert parse_config(stored, "stored") == cfg


@pytest.mark.parametrize("name", ["sweep_architectures.yaml", "sweep_resistor_sizes.yaml"])
def test_every_shipped_sweep_validates(name: str) -> None:
    from physlearn.sweep.expand import load_sweep

    assert load_sweep(CONFIGS / name).runs


def test_system_errors_name_the_field_path_the_user_writes() -> None:
    raw = load_yaml("quickstart.yaml")
    raw["system"]["graph"]["sizes"] = [10, 0, 3]
    raw["system"]["conductance"]["typo"] = 1
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "q.yaml")
    message = str(err.value)
    assert "system.graph.sizes.1: " in message and "system.conductance.typo: " in message
    assert "system.resistor." not in message


@settings(max_examples=40, deadline=None)
@given(
    system=st.one_of(
        st.text(max_size=12).map(lambda k: {"kind": k}),
        st.dictionaries(st.sampled_from(["graph", "kinds", "n"]), st.integers(), max_size=2),
        st.integers() | st.none() | st.lists(st.integers(), max_size=2) | st.text(max_size=5),
        st.integers().map(lambda k: {"kind": k}),
    )
)
def test_any_bad_system_section_is_one_error_naming_system(system: Any) -> None:
    assume(not (isinstance(system, dict) and system.get("kind") in registry.kinds()))
    raw = copy.deepcopy(QUICK)
    raw["system"] = system
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "q.yaml")
    message = str(err.value)
    assert message.startswith("q.yaml is not a valid experiment: system: ")
    assert "\n" not in message


# --------------------------------------------------------------------------------------------
# The checks of one entry point, without installing anything


class Abstract(SystemConfigBase):
    """Forgets to implement build."""

    kind: Literal["abstract"] = "abstract"

    def input_size(self) -> int:
        return 1

    def output_size(self) -> int:
        return 1


class TwoKinds(Abstract):
    kind: Literal["two", "kinds"] = "two"

    def build(self, seed: int) -> Any:
        raise NotImplementedError


def _entry(kind: str, target: str) -> registry.SystemEntry:
    ep = EntryPoint(kind, target, registry.GROUP)
    return registry.SystemEntry(kind, target, "(unknown distribution)", ep)


@pytest.mark.parametrize(
    ("kind", "target", "problem"),
    [
        ("abstract", f"{__name__}:Abstract", "Abstract does not implement build"),
        ("two", f"{__name__}:TwoKinds", "TwoKinds has no kind literal"),
        ("x", f"{__name__}:QUICK", "names {'name': 'quickstart'"),
        ("x", f"{__name__}:Missing", "cannot be loaded: AttributeError:"),
        ("x", "no_such_module_xyz:C", "cannot be loaded: ModuleNotFoundError:"),
    ],
)
def test_entry_point_checks(kind: str, target: str, problem: str) -> None:
    with pytest.raises(registry.SystemRegistryError) as err:
        _entry(kind, target).load()
    message = str(err.value)
    assert message.startswith(f"entry point {kind} = {target!r} (group physlearn.systems)")
    assert problem in message and "\n" not in message
