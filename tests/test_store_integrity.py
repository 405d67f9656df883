"""Store damage (the sibling of the envelope's hypothesis tests): a lost, truncated or corrupted
chunk of a committed store is reported by ``inspect --verify`` in one line naming the array and
steps, and ``resume`` refuses it (exit 2) instead of continuing from it; a store that verifies
resumes bit for bit."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from physlearn.cli import main
from physlearn.config import parse_config
from physlearn.run.start import start_run
from physlearn.store.run_store import RunStore

from .conftest import load_yaml
from .test_run_store import _assert_same_run

STOP_AT = 13  # steps committed when the run is stopped (commits of 4: the last one partial)


def small_config(root: Path) -> dict[str, Any]:
    """The quickstart, 24 steps, commits every 4 steps (as the ``quick_raw`` fixture)."""
    raw = load_yaml("quickstart.yaml")
    raw["schedule"]["steps"] = 24
    raw["schedule"].pop("epochs", None)
    raw["schedule"]["eval_every"] = 8
    raw["store"] = {**raw.get("store", {}), "root": str(root / "runs"), "flush_every": 4}
    return raw


def stop_at(step: int) -> Any:
    def on_step(done: int) -> None:
        if done == step:
            raise KeyboardInterrupt  # the run stops cleanly: every complete step committed

    return on_step


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An uninterrupted reference run and a run stopped after STOP_AT steps (made once)."""
    root = tmp_path_factory.mktemp("integrity")
    cfg = parse_config(small_config(root))
    start_run(cfg, root / "ref.zarr")
    res = start_run(cfg, root / "stopped.zarr", on_step=stop_at(STOP_AT))
    assert res.status == "abort" and res.committed_steps == STOP_AT
    return {"ref": root / "ref.zarr", "stopped": root / "stopped.zarr", "root": root}


def chunk_files(store: Path) -> list[str]:
    """Every chunk file of a store (relative paths): all files but metadata and the lock."""
    return sorted(
        str(p.relative_to(store))
        for p in store.rglob("*")
        if p.is_file() and p.name != "zarr.json" and ".physlearn" not in p.parts
    )


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def damage(path: Path, kind: str, data: st.DataObject) -> None:
    size = path.stat().st_size
    if kind == "delete":
        path.unlink()
    elif kind == "truncate":
        keep = data.draw(st.integers(0, max(0, size - 1)), label="keep bytes")
        with path.open("r+b") as fh:
            fh.truncate(keep)
    else:  # flip the bits of one to four bytes
        raw = bytearray(path.read_bytes())
        at = data.draw(st.integers(0, size - 1), label="offset")
        mask = data.draw(st.integers(1, 255), label="xor mask")
        for i in range(at, min(size, at + data.draw(st.integers(1, 4), label="bytes"))):
            raw[i] ^= mask
        path.write_bytes(bytes(raw))


def expected_name(rel: str) -> str:
    """What the damage line must name for a damaged chunk file."""
    parts = rel.split("/")
    if parts[0] == "checkpoint":
        return f"checkpoint slot {parts[1]!r}"
    if parts[0] == "integrity":
        return "integrity/commits"  # the checksum log itself (or an entry it vouches for)
    if parts[0] == "graph":
        return f"array 'graph/{parts[1]}'"
    return f"array {parts[0]!r}"


def contents(path: Path) -> dict[str, Any] | None:
    """Everything a reader or a resume gets from a store (committed rows, coordinates, graph,
    both checkpoint slots, the checksum log) as bytes, or None if some of it cannot be read."""
    out: dict[str, Any] = {}
    try:
        store = RunStore.open(path)
        g = store.group
        for name in store.array_names():
            out[name] = store.read(name).tobytes()
        for name in ("graph/positions", "graph/edges", "graph/node_roles"):
            out[name] = [str(v) for v in g[name][...].ravel()]
        for slot in ("a", "b"):
            for key, arr in g["checkpoint"][slot].arrays():
                out[f"checkpoint/{slot}/{key}"] = arr[...].tobytes()
        n = int(store.attrs["integrity_commits"])
        out["integrity/commits"] = [str(v) for v in g["integrity/commits"][:n]]
    except Exception:
        return None
    return out


@pytest.fixture(scope="module")
def scratch(stores: dict[str, Path]) -> Iterator[Path]:
    path = stores["root"] / "scratch"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_clean_store_verifies_and_names_what_it_checked(stores: dict[str, Path]) -> None:
    code, out, err = cli("inspect", str(stores["stopped"]), "--verify")
    assert code == 0, err
    assert f"verified ({STOP_AT} steps, 2 evaluations)" in out
    code, out, _ = cli("inspect", str(stores["ref"]), "--verify", "--json")
    assert code == 0 and "verified (24 steps" in json.loads(out)["verify"]


@settings(
    max_examples=24,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), kind=st.sampled_from(["delete", "truncate", "corrupt"]))
def test_damaged_chunk_is_reported_and_never_resumed(
    stores: dict[str, Path], scratch: Path, data: st.DataObject, kind: str
) -> None:
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(stores["stopped"], scratch)
    rel = data.draw(st.sampled_from(chunk_files(scratch)), label="chunk")
    damage(scratch / rel, kind, data)
    active = RunStore.open(scratch).attrs["checkpoint_slot"]
    superseded = rel.startswith("checkpoint/") and not rel.startswith(f"checkpoint/{active}/")
    if contents(scratch) == contents(stores["stopped"]):
        # bytes no reader gets (past the committed rows of a chunk): not damage, and the
        # resume overwrites them
        assert cli("inspect", str(scratch), "--verify")[0] == 0
        assert cli("resume", str(scratch))[0] == 0
        _assert_same_run(stores["ref"], scratch)
        return

    code, out, err = cli("inspect", str(scratch), "--verify")
    assert code == 2, (rel, kind, out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "is damaged" in err and (expected_name(rel) in err or rel.startswith("integrity")), err

    code, out, err = cli("resume", str(scratch))
    if superseded:  # the slot a resume does not read and the next commit rewrites
        assert code == 0, err
        _assert_same_run(stores["ref"], scratch)
        return
    assert code == 2, (rel, kind, out, err)
    assert len(err.strip().splitlines()) == 1 and "is damaged" in err, err
    # refused before anything was written: the store still holds the run as it was stopped
    store = RunStore.open(scratch)
    assert store.committed() == STOP_AT and store.attrs["exit_status"] == "abort"


def test_data_damage_names_the_array_and_steps(stores: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "r.zarr"
    shutil.copytree(stores["stopped"], copy)
    (copy / "loss" / "c" / "0").unlink()  # every committed loss row now reads as NaN
    code, _, err = cli("inspect", str(copy), "--verify")
    assert code == 2
    assert f"array 'loss', steps 0-{STOP_AT - 1}: rows do not match their checksum" in err, err


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(data_type="float32"),  # a changed dtype
        lambda m: m.update(shape=[5, *m["shape"][1:]]),  # rows cut off
    ],
    ids=["dtype", "shape"],
)
def test_damaged_metadata_is_reported(stores: dict[str, Path], tmp_path: Path, edit: Any) -> None:
    copy = tmp_path / "r.zarr"
    shutil.copytree(stores["stopped"], copy)
    meta_path = copy / "loss" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))
    for args in (("inspect", str(copy), "--verify"), ("resume", str(copy))):
        code, _, err = cli(*args)
        assert code == 2 and "array 'loss'" in err and len(err.strip().splitlines()) == 1, err


def test_store_without_checksums_still_resumes(stores: dict[str, Path], tmp_path: Path) -> None:
    """A store made before checksums existed: verify says so, resume continues exactly."""
    copy = tmp_path / "old.zarr"
    shutil.copytree(stores["stopped"], copy)
    shutil.rmtree(copy / "integrity")
    meta = json.loads((copy / "zarr.json").read_text())
    del meta["attributes"]["integrity_commits"]
    (copy / "zarr.json").write_text(json.dumps(meta))
    code, out, _ = cli("inspect", str(copy), "--verify")
    assert code == 0 and "carries no checksums" in out
    code, _, err = cli("resume", str(copy))
    assert code == 0, err
    _assert_same_run(stores["ref"], copy)
    assert "integrity_commits" not in RunStore.open(copy).attrs  # kept as it began


def test_verified_store_resumes_bit_for_bit(stores: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "r.zarr"
    shutil.copytree(stores["stopped"], copy)
    assert cli("resume", str(copy))[0] == 0
    code, out, _ = cli("inspect", str(copy), "--verify")
    assert code == 0 and "verified (24 steps" in out
    _assert_same_run(stores["ref"], copy)
