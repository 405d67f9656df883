"""Bad input is refused before anything is written or opened (issue 19, item 6).

Every case: exit 2, exactly one stderr line that names the field, key or option, no traceback,
nothing created where the output would go, and (station systems) no instrument contacted.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from physlearn.cli import main

from .conftest import CONFIGS, ROOT, load_yaml, run_cli

Edit = Callable[[dict[str, Any]], None]


def one_error_line(err: str) -> str:
    """The single stderr line of a refused command (asserts there is exactly one)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("physlearn: error: "), err
    assert "Traceback" not in err
    return lines[0]


def nothing_in(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def _epochs_inf(r: dict[str, Any]) -> None:
    r["schedule"].pop("steps")
    r["schedule"]["epochs"] = math.inf


def _set(path: str, value: Any) -> Edit:
    def edit(r: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node = r
        for part in head:
            node = node.setdefault(part, {})
        node[last] = value

    return edit


def _lattice(rows: int, cols: int) -> Edit:
    graph = {"type": "lattice", "rows": rows, "cols": cols, "inputs": 10, "outputs": 3}
    return _set("system.graph", graph)


BAD_VALUES: dict[str, tuple[Edit, str]] = {
    "epochs inf": (_epochs_inf, "schedule.epochs"),
    "beta inf": (_set("estimator.beta", math.inf), "estimator.beta:"),
    "lr nan": (_set("optimizer.lr", math.nan), "optimizer.lr"),
    "bias -inf": (_set("task.encoding.bias", [1.0, -math.inf]), "task.encoding.bias.1"),
    "hidden layer 1e9": (_set("system.graph.sizes", [10, 10**9, 3]), "system.graph.sizes.1:"),
    "layered edges": (_set("system.graph.sizes", [10, 900_000, 3]), "edges"),
    "lattice nodes": (_lattice(100_000, 100_000), "rows x cols"),
    "batch budget": (_set("system.graph.sizes", [10, 500_000, 3]), "schedule.batch_size"),
    "steps 1e12": (_set("schedule.steps", 10**12), "schedule.steps"),
    "epochs 1e300": (
        lambda r: (r["schedule"].pop("steps"), r["schedule"].update(epochs=1e300)),
        "schedule.epochs",
    ),
    "regression size": (
        _set("task.dataset", {"kind": "regression", "features": 4, "train_size": 10**9}),
        "task.dataset.train_size:",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_value_is_refused_before_the_store(case, quick_raw, write_config, tmp_path, capsys):
    edit, field = BAD_VALUES[case]
    edit(quick_raw)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    code = main(["run", str(write_config(quick_raw)), "--out", str(out / "run.zarr")])
    elapsed = time.perf_counter() - t0
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert field in line
    assert nothing_in(out) and nothing_in(tmp_path / "runs")
    assert elapsed < 2.0  # validation only: nothing is built


OTHER_SYSTEMS: dict[str, tuple[str, Edit, str]] = {
    "xy all_to_all": ("xy_xor_dense.yaml", _set("system.graph.n_nodes", 10**6), "n_nodes"),
    "xy restarts budget": ("xy_xor_dense.yaml", _set("system.restarts", 10**9), "batch_size"),
    "quantum qubits": ("quantum_phase_sensor.yaml", _set("system.qubits", 1000), "qubits"),
    "ions": ("ions_regression.yaml", _set("system.n_ions", 1000), "n_ions"),
    "rydberg": ("rydberg_iris.yaml", _set("system.limits.max_atoms", 1000), "max_atoms"),
    "digits test_size": (
        "resistor_digits_deep.yaml",
        _set("task.dataset.test_size", 10**9),
        "task.dataset.test_size:",
    ),
}


@pytest.mark.parametrize("case", sorted(OTHER_SYSTEMS))
def test_size_bounds_of_every_system_kind(case, tmp_path, capsys):
    name, edit, field = OTHER_SYSTEMS[case]
    raw = load_yaml(name)
    edit(raw)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(path)]) == 2
    assert field in one_error_line(capsys.readouterr().err)


def test_shipped_configs_are_within_the_bounds(capsys):
    for name in ("quickstart.yaml", "xy_xor_dense.yaml", "quantum_phase_sensor.yaml"):
        assert main(["validate", str(CONFIGS / name)]) == 0, capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Files the hardened loader refuses


def _deep(text: str) -> str:
    return text + "description: " + "[" * 5000 + "]" * 5000 + "\n"


BAD_FILES: dict[str, tuple[Callable[[str], bytes], str]] = {
    "non-utf8 byte": (
        lambda t: t.replace("seed: 0", "seed: 0 # caf\xe9").encode("latin-1"),
        "0xe9",
    ),
    "5000-deep list": (lambda t: _deep(t).encode(), "nest deeper"),
    "duplicate key": (lambda t: (t + "seed: 3\n").encode(), "duplicate key 'seed'"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_yaml_file_is_refused(case, quick_raw, tmp_path, capsys):
    make, what = BAD_FILES[case]
    path = tmp_path / "exp.yaml"
    path.write_bytes(make(yaml.safe_dump(quick_raw, sort_keys=False)))
    code = main(["run", str(path), "--out", str(tmp_path / "out" / "r.zarr")])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert what in line and str(path) in line
    assert nothing_in(tmp_path / "out")


def test_duplicate_key_names_both_lines(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("name: a\nschedule:\n  steps: 3\n  batch_size: 4\n  steps: 5\n")
    assert main(["validate", str(path)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "line 5: duplicate key 'steps' (first given at line 3)" in line


def test_alias_bomb_in_a_sweep_grid_is_refused_fast(quick_raw, write_config, tmp_path, capsys):
    base = write_config(quick_raw)
    levels = ["&l0 [0, 0, 0, 0, 0, 0, 0, 0, 0]"]
    levels += [f"&l{k} [{', '.join([f'*l{k - 1}'] * 9)}]" for k in range(1, 10)]
    sweep = tmp_path / "bomb.yaml"
    sweep.write_text(f"name: bomb\nbase: {base}\ngrid:\n  seed: [{', '.join(levels)}]\n")
    out = tmp_path / "sweeps"
    t0 = time.perf_counter()
    code = main(["sweep", str(sweep), "--out", str(out / "s.zarr"), "--workers", "0"])
    assert time.perf_counter() - t0 < 5.0
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "alias" in line and "line 4" in line
    assert nothing_in(out)


def test_anchors_and_merge_keys_within_the_bounds_still_work(quick_raw, tmp_path, capsys):
    text = yaml.safe_dump(quick_raw, sort_keys=False)
    text = text.replace("optimizer:\n", "opt: &opt\n  kind: adam\noptimizer:\n  <<: *opt\n", 1)
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2  # 'opt' is an unknown key: the anchor parsed
    assert "opt: unknown key" in one_error_line(capsys.readouterr().err)
    path.write_text(text.replace("opt: &opt\n  kind: adam\n", "").replace("  <<: *opt\n", ""))
    assert main(["validate", str(path)]) == 0


# --------------------------------------------------------------------------------------------
# Command-line arguments


def test_set_index_out_of_range_names_the_path(quick_raw, write_config, capsys):
    path = write_config(quick_raw)
    assert main(["validate", str(path), "--set", "system.graph.sizes.7=4"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "system.graph.sizes.7" in line and "3 elements" in line
    assert main(["validate", str(path), "--set", "system.graph.sizes.1=8"]) == 0


def _unwritable_dir(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root writes anywhere permissions allow root: use /proc/1
        p = Path("/proc/1")
        if not p.is_dir():
            pytest.skip("no /proc/1 for an unwritable directory")
        return p
    p = tmp_path / "readonly"
    p.mkdir()
    p.chmod(0o555)
    return p


def test_out_inside_a_file_or_unwritable_dir(quick_raw, write_config, tmp_path, capsys):
    cfg = write_config(quick_raw)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    for out, what in (
        (blocker / "run.zarr", f"{blocker} is a file"),
        (blocker, "a file is in the way"),
        (_unwritable_dir(tmp_path) / "sub" / "run.zarr", "cannot write in"),
    ):
        assert main(["run", str(cfg), "--out", str(out)]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "--out" in line and what in line
    quick_raw["store"]["root"] = str(blocker / "runs")
    assert main(["run", str(write_config(quick_raw))]) == 2
    assert "store.root" in one_error_line(capsys.readouterr().err)
    assert blocker.read_text() == "x"


def test_report_out_on_a_file(tmp_path, capsys):
    blocker = tmp_path / "report.html"
    blocker.write_text("keep me")
    assert main(["report", str(tmp_path / "any.zarr"), "--out", str(blocker)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--out" in line and "a file is in the way" in line
    assert blocker.read_text() == "keep me"


def test_report_without_matplotlib_says_what_to_install(tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None; "
        "from physlearn.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    import subprocess

    res = subprocess.run(
        [sys.executable, "-c", code, "report", str(tmp_path / "a.zarr")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert res.returncode == 2
    line = one_error_line(res.stderr)
    assert "matplotlib" in line and "pip install 'physlearn[sweep]'" in line


# --------------------------------------------------------------------------------------------
# Station systems: refused by the pydantic model, before any instrument is contacted


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def station_raw(tmp_path: Path) -> dict[str, Any]:
    """The virtual-lab experiment without its in-process lab, its station pointing at a port
    where nothing listens: any connection attempt would fail with a bench error, not exit 2."""
    station = yaml.safe_load((CONFIGS / "virtual_lab_station.yaml").read_text())
    for entry in station["instruments"].values():
        entry["address"] = f"TCPIP::127.0.0.1::{_dead_port()}::SOCKET"
    (tmp_path / "station.yaml").write_text(yaml.safe_dump(station))
    raw = load_yaml("virtual_lab_resistor.yaml")
    raw["system"].pop("lab")
    raw["system"]["station"] = str(tmp_path / "station.yaml")
    raw["schedule"] = {"steps": 2, "batch_size": 4, "eval_every": 1}
    raw["store"] = {"root": str(tmp_path / "runs")}
    return raw


STATION_CASES: dict[str, tuple[Edit, str]] = {
    "compliance inf": (
        lambda r: r["system"]["inputs"]["compliance"].update(value=math.inf),
        "system.inputs.compliance.value",
    ),
    "billion channels": (
        lambda r: r["system"]["probes"].update(channels="{101..1000000100}"),
        "system.probes.channels",
    ),
}


@pytest.mark.parametrize("case", sorted(STATION_CASES))
def test_station_bad_value_refused_before_any_instrument(case, station_raw, tmp_path, capsys):
    edit, field = STATION_CASES[case]
    edit(station_raw)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(station_raw))
    t0 = time.perf_counter()
    code = main(["run", str(path), "--out", str(tmp_path / "out" / "r.zarr")])
    assert time.perf_counter() - t0 < 2.0
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and field in line
    assert nothing_in(tmp_path / "out") and nothing_in(tmp_path / "runs")


def test_station_fixture_is_valid_without_the_edit(station_raw, tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(station_raw))
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_station_file_with_duplicate_key_is_refused(station_raw, tmp_path, capsys):
    station = Path(station_raw["system"]["station"])
    station.write_text(station.read_text() + "instruments: {}\n")
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(station_raw))
    assert main(["validate", str(path)]) == 2
    assert "duplicate key 'instruments'" in one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------------------------
# Random bad values for numeric fields

#: Numeric fields that must be positive (every non-positive number is invalid), and sections.
NUMERIC_FIELDS = [
    ("optimizer", "lr"),
    ("optimizer", "eps"),
    ("estimator", "beta"),
    ("schedule", "batch_size"),
    ("schedule", "eval_every"),
    ("task", "temperature"),
    ("store", "flush_seconds"),
    ("system", "conductance"),
]
BAD_NUMBERS = st.one_of(
    st.sampled_from(
        [".inf", "-.inf", ".nan", "1.0e+999", "1e999", "-1", "0", "0x", "[]", "{}", "*x", "&a"]
    ),
    st.integers(max_value=0).map(str),
    st.floats(max_value=0.0).map(repr),
    st.text(alphabet="[]{}&*!|>:-,#'\"%@`", min_size=1, max_size=8),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(field=st.sampled_from(NUMERIC_FIELDS), text=BAD_NUMBERS)
def test_random_bad_numbers_exit_2_without_traceback(quick_raw, tmp_path, field, text):
    section, key = field
    quick_raw.setdefault(section, {})[key] = "BADVALUEMARK"
    base = yaml.safe_dump(quick_raw, sort_keys=False)
    path = tmp_path / "rand.yaml"
    path.write_text(base.replace("BADVALUEMARK", text))
    out = tmp_path / "rand_out"
    err_file = tmp_path / "err.txt"
    with open(err_file, "w") as fh:
        old, sys.stderr = sys.stderr, fh
        try:
            code = main(["run", str(path), "--out", str(out / "r.zarr")])
        finally:
            sys.stderr = old
    err = err_file.read_text()
    assert code == 2, (text, err)
    one_error_line(err)
    assert nothing_in(out)


def test_subprocess_exit_code_for_a_bad_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_bytes(b"name: x\nseed: \xff\n")
    res = run_cli("validate", str(path))
    assert res.returncode == 2
    assert "offset 14 (line 2)" in one_error_line(res.stderr)
