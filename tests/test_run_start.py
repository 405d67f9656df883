"""Starting a run: a campaign that cannot be set up after its store exists still ends with the
store marked failed, the system closed and the writer lock given back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from physlearn.config import parse_config
from physlearn.run import start
from physlearn.store.lock import StoreLock
from physlearn.store.run_store import RunStore


def test_a_campaign_that_cannot_be_built_fails_the_run_and_closes_the_system(
    quick_raw: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = []
    real_build = start.build_system

    def build(config: Any) -> Any:
        system = real_build(config)
        real_close = system.close
        system.close = lambda: (closed.append(True), real_close())[1]  # type: ignore[method-assign]
        return system

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("dataset unreadable")

    monkeypatch.setattr(start, "build_system", build)
    monkeypatch.setattr(start, "Campaign", broken)
    path = tmp_path / "r.zarr"
    with pytest.raises(RuntimeError, match="dataset unreadable"):
        start.start_run(parse_config(quick_raw), path)
    store = RunStore.open(path)
    assert store.status() == "fail"
    assert "dataset unreadable" in store.attrs["error"]
    assert closed
    with StoreLock(path) as lock:  # given back
        assert lock.held
