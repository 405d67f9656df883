"""Bad configs are refused before anything runs: exit 2, field named, no traceback, no store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from physlearn.cli import main
from physlearn.config import ConfigError, parse_config

from .conftest import run_cli


def _no_store_written(root: Path) -> bool:
    return not root.exists() or not any(root.iterdir())


BAD_EDITS = {
    "unknown key": (lambda r: r["optimizer"].update(lrr=0.1), "optimizer.lrr", "unknown key"),
    "wrong type": (
        lambda r: r["schedule"].update(batch_size="many"),
        "schedule.batch_size",
        "integer",
    ),
    "out of range": (lambda r: r["optimizer"].update(lr=-1.0), "optimizer.lr", "greater than 0"),
    "unknown system kind": (
        lambda r: r["system"].update(kind="flux_capacitor"),
        "system",
        "flux_capacitor",
    ),
    "size mismatch": (lambda r: r["task"]["encoding"].update(bias=[]), "input channels", "inputs"),
}


@pytest.mark.parametrize("case", sorted(BAD_EDITS))
def test_bad_config_is_refused_with_field_named(case, quick_raw, write_config, tmp_path, capsys):
    edit, field, reason = BAD_EDITS[case]
    edit(quick_raw)
    path = write_config(quick_raw)
    code = main(["run", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert field in err and reason in err
    assert "Traceback" not in err
    assert _no_store_written(tmp_path / "runs")


def test_missing_file_and_yaml_syntax(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("system:\n  kind: resistor\n   graph: [\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "YAML syntax error at line" in err and "Traceback" not in err


def test_cli_subprocess_exit_code_and_no_traceback(quick_raw, write_config, tmp_path):
    quick_raw["schedule"]["batch_size"] = 0
    res = run_cli("run", str(write_config(quick_raw)))
    assert res.returncode == 2
    assert "schedule.batch_size" in res.stderr and "Traceback" not in res.stderr
    assert _no_store_written(tmp_path / "runs")


def test_set_overrides_and_validate(quick_raw, write_config, capsys):
    path = write_config(quick_raw)
    assert main(["validate", str(path), "--set", "optimizer.lr=0.5", "--set", "seed=4"]) == 0
    assert main(["validate", str(path), "--set", "optimizer.lr=oops"]) == 2
    assert "optimizer.lr" in capsys.readouterr().err


def test_schema_is_json_with_descriptions(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "system" in schema["properties"]
    assert "description" in json.dumps(schema)


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run", "resume", "validate", "inspect", "schema"):
        assert cmd in out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    section=st.sampled_from(["optimizer", "schedule", "store", "estimator", "task"]),
    key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
    value=st.one_of(st.integers(), st.text(max_size=5), st.floats(allow_nan=False), st.none()),
)
def test_random_garbage_never_escapes_as_a_traceback(quick_raw, section, key, value):
    raw = json.loads(json.dumps(quick_raw))
    raw[section][key] = value
    try:
        parse_config(raw)
    except ConfigError as exc:
        assert section in str(exc)
