"""Pulse-programmed memristive weights: the device model's statistics, the window, the
programming algorithms, and the board over a real socket with our qcodes driver.

Statistical bounds: a mean of ``n`` draws is checked to ``5 sigma / sqrt(n)``; a sample
variance to ``6 sqrt(2 / (n - 1))`` relative (its standard error for Gaussian draws). With a
fixed seed per example a correct model fails such a bound with probability below 1e-6.
"""

from __future__ import annotations

import math
import socket
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from physlearn.drivers.station.programming import (
    ProgrammingConfig,
    SimulatedDevices,
    nominal_pulses,
    program,
)
from physlearn.drivers.virtual_lab.memristor import (
    LINEAR_NU,
    RESET,
    SET,
    MemristorArray,
    MemristorModel,
    mean_step,
)

N = 4000
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _var_bound(n: int) -> float:
    return 6 * math.sqrt(2 / (n - 1))


def _clock() -> object:
    t = [0.0]

    def tick() -> float:
        t[0] += 1.0
        return t[0]

    return tick


def _curve_step(g0: float, kind: int, g_lo: float, g_hi: float, nu: float, pulses: int) -> float:
    """Mean change of one nominal pulse at ``g0`` read off the NeuroSim curve itself (not
    :func:`mean_step`): ``G(x) = g_lo + B (1 - exp(-x / A))``, ``A = P / nu``,
    ``B = W / (1 - exp(-P / A))`` for SET, mirrored about the window for RESET; at the position
    ``x0`` of ``g0`` the step ``G(x0 + 1) - G(x0)`` is ``(B - |g0 - start|) (1 - exp(-1 / A))``
    with ``start`` the curve's starting edge. Linear (``W / P``) below ``LINEAR_NU``, as the
    model documents."""
    w = g_hi - g_lo
    if nu < LINEAR_NU:
        return kind * w / pulses
    a = pulses / nu
    b = w / -math.expm1(-pulses / a)
    dist = g0 - g_lo if kind == SET else g_hi - g0
    return kind * (b - dist) * -math.expm1(-1 / a)


@FAST
@given(
    seed=st.integers(0, 2**31),
    ratio=st.floats(3, 50),
    pulses=st.integers(20, 500),
    nu=st.floats(0, 8),
    c2c=st.floats(0, 0.4),
    c2c_window=st.floats(0, 0.01),
    u=st.floats(0.05, 0.95),
    kind=st.sampled_from([SET, RESET]),
)
def test_one_pulse_moves_g_by_the_model_mean_with_the_configured_c2c_spread(
    seed: int, ratio: float, pulses: int, nu: float, c2c: float, c2c_window: float, u: float,
    kind: int,
) -> None:  # fmt: skip
    """The realised update's statistics match the configured device model (issue 20): over
    ``N`` devices, one pulse's mean change is the nominal curve's step and its spread the
    configured cycle-to-cycle variation ``hypot(c2c mu, c2c_window W)``."""
    m = MemristorModel(g_min=1e-6, g_max=ratio * 1e-6, pulses_set=pulses, pulses_reset=pulses,
                       nu_set=nu, nu_reset=nu, c2c=c2c, c2c_window=c2c_window)  # fmt: skip
    w = m.g_max - m.g_min
    g0 = m.g_min + u * w
    mu = _curve_step(g0, kind, m.g_min, m.g_max, nu, pulses)
    sigma = math.hypot(mu * c2c, c2c_window * w)
    assume(m.g_min < g0 + mu - 6 * sigma and g0 + mu + 6 * sigma < m.g_max)  # no clipping
    a = MemristorArray(m, N, seed)
    a.initialise(g0, 0.0)
    a.pulse(np.full(N, kind, dtype=np.int64), 0.0)
    d = a.conductance(0.0) - g0
    assert abs(d.mean() - mu) <= 5 * sigma / math.sqrt(N) + 1e-12 * w
    if sigma > 1e-12 * w:  # well above float64 round-off of g (~1e-16 w)
        assert abs(d.var(ddof=1) / sigma**2 - 1) <= _var_bound(N)
    else:
        assert np.max(np.abs(d - mu)) <= 10 * sigma + 1e-12 * w
    assert np.sign(mu) == kind  # SET raises, RESET lowers


@pytest.mark.parametrize("nu", [0.0, 0.5, 4.0])
def test_noise_free_pulses_walk_the_neurosim_exponential_curves(nu: float) -> None:
    """Independent of the module's formulas: G(x) = g_min + B (1 - exp(-x/A)), A = P/nu, and
    the RESET curve mirrored; P pulses span the window exactly."""
    p = 31
    m = MemristorModel(pulses_set=p, pulses_reset=p, nu_set=nu, nu_reset=nu, c2c_window=0.0)
    a = MemristorArray(m, 1, 0)
    w = m.g_max - m.g_min
    xs = np.arange(p + 1)
    if nu == 0:
        curve = m.g_min + w * xs / p
    else:
        a_const = p / nu
        curve = m.g_min + w / (1 - math.exp(-p / a_const)) * (1 - np.exp(-xs / a_const))
    a.initialise(m.g_min, 0.0)
    up = [a.conductance(0.0)[0]]
    for _ in range(p):
        a.pulse(np.array([1]), 0.0)
        up.append(a.conductance(0.0)[0])
    np.testing.assert_allclose(up, curve, rtol=1e-9)
    down = [a.conductance(0.0)[0]]
    for _ in range(p):
        a.pulse(np.array([-1]), 0.0)
        down.append(a.conductance(0.0)[0])
    np.testing.assert_allclose(down, (m.g_min + m.g_max) - curve, rtol=1e-9)


@pytest.mark.slow
@FAST
@given(seed=st.integers(0, 2**31), sigma=st.floats(0.02, 0.3), ratio=st.floats(6, 50),
       step=st.floats(0.02, 0.5))  # fmt: skip
def test_device_to_device_spread_of_window_and_step_is_as_configured(
    seed: int, sigma: float, ratio: float, step: float
) -> None:
    n = 3000
    m = MemristorModel(g_min=1e-6, g_max=ratio * 1e-6, pulses_set=20, pulses_reset=20,
                       nu_set=0.0, nu_reset=0.0, c2c_window=0.0, d2d_window=sigma,
                       d2d_step=step)  # fmt: skip
    a = MemristorArray(m, n, seed)
    # one SET pulse of a linear device from the middle: step s_d W_d / P
    mid = (a.g_lo + a.g_hi) / 2
    a.initialise(mid, 0.0)
    a.pulse(np.ones(n, dtype=np.int64), 0.0)
    s_d = (a.conductance(0.0) - mid) * 20 / (a.g_hi - a.g_lo)
    # saturate: the realised window edges
    a.pulse(np.full(n, 400, dtype=np.int64), 0.0)
    top = a.conductance(0.0)
    a.pulse(np.full(n, -400, dtype=np.int64), 0.0)
    bottom = a.conductance(0.0)
    np.testing.assert_array_equal(top, a.g_hi)  # saturated: the realised edges
    np.testing.assert_array_equal(bottom, a.g_lo)
    for got, nominal, sd in ((top, m.g_max, sigma), (bottom, m.g_min, sigma), (s_d, 1.0, step)):
        logs = np.log(got / nominal)
        assert abs(logs.mean() + sd**2 / 2) <= 5 * sd / math.sqrt(n)
        assert abs(logs.var(ddof=1) / sd**2 - 1) <= _var_bound(n)


@FAST
@given(seed=st.integers(0, 2**31), sigma=st.floats(0.001, 0.2), u=st.floats(0, 1))
def test_read_noise_is_relative_gaussian_with_the_configured_std(
    seed: int, sigma: float, u: float
) -> None:
    m = MemristorModel(read_noise=sigma)
    a = MemristorArray(m, N, seed)
    g = m.g_min + u * (m.g_max - m.g_min)
    a.initialise(g, 0.0)
    rel = a.read(5.0) / g - 1
    assert abs(rel.mean()) <= 5 * sigma / math.sqrt(N)
    assert abs(rel.var(ddof=1) / sigma**2 - 1) <= _var_bound(N)
    np.testing.assert_array_equal(a.conductance(5.0), g)  # reading does not disturb


@FAST
@given(seed=st.integers(0, 2**31), law=st.sampled_from(["power", "log"]),
       nu=st.floats(0.005, 0.1), spread=st.floats(0.05, 0.5), t0=st.floats(0.1, 100),
       age=st.floats(0.1, 1000))  # fmt: skip
def test_retention_drift_follows_the_configured_law(
    seed: int, law: str, nu: float, spread: float, t0: float, age: float
) -> None:
    exact = MemristorModel(g_min=1e-7, drift=law, drift_nu=nu, drift_t0=t0)
    a = MemristorArray(exact, 10, seed)
    a.initialise(exact.g_max, 3.0)
    x = math.log1p(age / t0)
    want = exact.g_max * (math.exp(-nu * x) if law == "power" else 1 - nu * x)
    assume(want > 2 * exact.g_min)
    np.testing.assert_allclose(a.conductance(3.0 + age), want, rtol=1e-12)
    np.testing.assert_allclose(a.conductance(3.0), exact.g_max, rtol=1e-15)
    # device-to-device spread of the exponent: log nu_d has std `spread`
    n = 3000
    spread_model = exact.model_copy(update={"d2d_drift": spread})
    b = MemristorArray(spread_model, n, seed)
    b.initialise(exact.g_max, 0.0)
    ratio = b.conductance(age) / exact.g_max
    assume(ratio.min() > 2 * exact.g_min / exact.g_max)  # none held at the window's edge
    nu_d = -np.log(ratio) / x if law == "power" else (1 - ratio) / x
    logs = np.log(nu_d / nu)
    assert abs(logs.mean() + spread**2 / 2) <= 5 * spread / math.sqrt(n)
    assert abs(logs.var(ddof=1) / spread**2 - 1) <= _var_bound(n)


@FAST
@given(
    seed=st.integers(0, 2**31),
    nu=st.floats(0, 10),
    c2c=st.floats(0, 1),
    c2c_window=st.floats(0, 0.1),
    d2d=st.floats(0, 0.5),
    stuck=st.floats(0, 0.5),
    drift=st.sampled_from(["none", "power", "log"]),
    writes=st.lists(st.integers(-400, 400), min_size=1, max_size=8),
)
def test_the_window_is_never_left(
    seed: int, nu: float, c2c: float, c2c_window: float, d2d: float, stuck: float, drift: str,
    writes: list[int],
) -> None:  # fmt: skip
    m = MemristorModel(pulses_set=20, pulses_reset=20, nu_set=nu, nu_reset=nu / 2, c2c=c2c,
                       c2c_window=c2c_window, d2d_window=d2d, d2d_step=d2d, d2d_nu=d2d,
                       stuck=stuck, drift=drift, drift_nu=0.5)  # fmt: skip
    a = MemristorArray(m, 64, seed)
    rng = np.random.default_rng(seed)
    for k, w in enumerate(writes):
        counts = rng.integers(-abs(w), abs(w) + 1, 64)
        a.pulse(counts, float(10 * k))
        for t in (10.0 * k, 10.0 * k + 1e4):
            g = a.conductance(t)
            assert np.all(a.g_lo <= g) and np.all(g <= a.g_hi)
    assert np.all(a.g_lo < a.g_hi)


def _wv_model(pulses: int, nu: float, c2c: float, d2d_step: float, stuck: float) -> MemristorModel:
    return MemristorModel(pulses_set=pulses, pulses_reset=pulses, nu_set=nu, nu_reset=nu * 1.5,
                          c2c=c2c, c2c_window=0.001, d2d_window=0.03, d2d_step=d2d_step,
                          stuck=stuck)  # fmt: skip


@pytest.mark.slow
@FAST
@given(seed=st.integers(0, 2**31), pulses=st.integers(300, 1000), nu=st.floats(0, 2),
       c2c=st.floats(0, 0.2), d2d_step=st.floats(0, 0.1), stuck=st.floats(0, 0.1),
       tol=st.floats(0.015, 0.03))  # fmt: skip
def test_write_verify_converges_or_reports_exactly_the_devices_that_did_not(
    seed: int, pulses: int, nu: float, c2c: float, d2d_step: float, stuck: float, tol: float
) -> None:
    n = 200
    m = _wv_model(pulses, nu, c2c, d2d_step, stuck)
    a = MemristorArray(m, n, seed)
    w = m.g_max - m.g_min
    t_abs = tol * w
    rng = np.random.default_rng(seed + 1)
    # reachable targets well inside each device's window; every 10th one well outside it
    targets = rng.uniform(a.g_lo + 2 * t_abs, a.g_hi - 2 * t_abs)
    outside = np.arange(n) % 10 == 0
    above = rng.random(n) < 0.5
    targets[outside] = np.where(above, a.g_hi + 3 * t_abs, a.g_lo - 3 * t_abs)[outside]
    cfg = ProgrammingConfig(tolerance=tol, max_iterations=60, max_pulses_per_step=1000)
    result = program(SimulatedDevices(a, _clock()), targets, m, cfg)  # type: ignore[arg-type]
    stuck_far = a.stuck & (np.abs(a.g_prog - targets) > t_abs)
    expected = np.flatnonzero(outside | stuck_far)
    np.testing.assert_array_equal(result.unconverged, expected)
    ok = np.setdiff1d(np.arange(n), expected)
    assert np.all(np.abs(a.conductance(0.0)[ok] - targets[ok]) <= t_abs)


def test_open_loop_error_grows_with_variation_and_is_rounding_only_without_it() -> None:
    n = 2000
    targets = np.random.default_rng(5).uniform(1e-6, 9e-6, n)
    errors = []
    for var in (0.0, 0.05, 0.15, 0.4):
        m = MemristorModel(pulses_set=100, pulses_reset=100, nu_set=2.0, nu_reset=3.0,
                           c2c=var, c2c_window=var / 20, d2d_step=var, d2d_nu=var)  # fmt: skip
        a = MemristorArray(m, n, 7)
        a.initialise(5e-6, 0.0)
        cfg = ProgrammingConfig(mode="open_loop", max_pulses_per_step=1000)
        r = program(SimulatedDevices(a, _clock()), targets, m, cfg)  # type: ignore[arg-type]
        assert r.iterations == 1 and r.unconverged.size == 0
        errors.append(float(np.sqrt(np.mean((r.conductance - targets) ** 2))))
        if var == 0.0:  # only rounding to whole pulses: at most half the largest step
            big = max(
                abs(float(mean_step(np.array(m.g_min), SET, m.g_min, m.g_max, 2.0, 100))),
                abs(float(mean_step(np.array(m.g_max), RESET, m.g_min, m.g_max, 3.0, 100))),
            )
            assert np.max(np.abs(r.conductance - targets)) <= big / 2 * (1 + 1e-9)  # fmt: skip
    assert errors == sorted(errors) and errors[-1] > 3 * errors[1] > 0


def test_nominal_pulses_invert_the_curves_and_respect_the_limit() -> None:
    m = MemristorModel(pulses_set=50, pulses_reset=80, nu_set=3.0, nu_reset=1.0)
    assert nominal_pulses(np.array([m.g_min]), np.array([m.g_max]), m, 1000)[0] == 50
    assert nominal_pulses(np.array([m.g_max]), np.array([m.g_min]), m, 1000)[0] == -80
    assert nominal_pulses(np.array([m.g_max]), np.array([10.0]), m, 1000)[0] == 0
    assert nominal_pulses(np.array([m.g_min]), np.array([m.g_max]), m, 7)[0] == 7


# -- the board over a real socket -------------------------------------------------------------


@pytest.fixture
def board_lab():  # type: ignore[no-untyped-def]
    from physlearn.drivers.virtual_lab.testing import running_lab

    mem = {"max_pulses": 500,
           "device": {"pulses_set": 100, "pulses_reset": 100, "nu_set": 1.0, "nu_reset": 2.0,
                      "c2c_window": 0.0}}  # fmt: skip
    # the board is the weight bank: one device per edge (2 x 2 + 2 x 2 = 8)
    raw = {"seed": 3, "graph": {"type": "layered", "sizes": [2, 2, 2]}, "memristors": mem}
    with running_lab(raw) as lab:
        yield lab


def test_board_over_tcp_with_our_driver(board_lab) -> None:  # type: ignore[no-untyped-def]
    from physlearn.drivers.instruments.memristor_board import MemristorBoard

    lab = board_lab
    assert lab.lab.driver_class("mem").endswith("memristor_board.MemristorBoard")
    board = MemristorBoard("mem_t1", lab.address("mem"), visalib="@py", terminator="\n")
    try:
        assert board.IDN()["model"] == "VLAB-MEM8"
        assert board.count == 8 and board.max_pulses == 500
        g_min, g_max = board.window
        g0 = board.read_conductances()
        np.testing.assert_array_equal(g0, g_min)
        board.apply_pulses(np.array([5, 0, 0, 0, 0, 0, 0, 0]))
        g1 = board.read_conductances()
        assert g1[0] > g_min and np.all(g1[1:] == g_min)
        board.pulse("SET", 3, [2, 3])
        g2 = board.read_conductances()
        assert g2[1] == g2[2] > g_min and g2[0] == g1[0]
        board.apply_pulses(np.array([-2, 0, 0, 0, 0, 0, 0, 0]))
        assert board.read_conductances()[0] < g1[0]
        with pytest.raises(ValueError):  # the validator refuses before anything is sent
            board.apply_pulses(np.array([501, 0, 0, 0, 0, 0, 0, 0]))
        before = board.read_conductances()
        board.write("MEM:PULS:SET 501,(@1)")
        board.write("MEM:PULS:ALL 1,2,3")
        board.write("MEM:PULS:WIDT 5")
        errs = board.errors()
        assert [e.split(",")[0] for e in errs] == ["-222", "-109", "-222"]
        np.testing.assert_array_equal(board.read_conductances(), before)
        board.pulse_width(1e-7)
        assert board.pulse_width() == 1e-7
        with pytest.raises(ValueError):
            board.set_voltage(99.0)
        for amplitude in (board.set_voltage, board.reset_voltage):
            with pytest.raises(ValueError):  # the board refuses 0 V: the validator does first
                amplitude(0.0)
        board.pulse_width(8e-8)
        cfg = ProgrammingConfig(tolerance=0.01, max_iterations=30, max_pulses_per_step=500)
        model = lab.config.memristors.device
        targets = np.linspace(g_min, g_max, 10)[1:9]
        result = program(board, targets, model, cfg)
        assert result.unconverged.size == 0
        assert np.all(np.abs(board.read_conductances() - targets) <= 0.01 * (g_max - g_min))
        assert board.errors() == []
    finally:
        board.close()


def _canned_board(replies: dict[str, str]) -> tuple[str, threading.Thread, socket.socket]:
    """A TCP server on 127.0.0.1 answering each query line from ``replies`` (one client)."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn, conn.makefile("rw", newline="\n") as f:
            for line in f:
                cmd = line.strip()
                if cmd.endswith("?"):
                    f.write(replies.get(cmd, "0") + "\n")
                    f.flush()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return f"TCPIP::127.0.0.1::{srv.getsockname()[1]}::SOCKET", t, srv


@pytest.mark.parametrize("reply", ["0", "-3"])
def test_implausible_max_pulses_reply_names_that_query(reply: str) -> None:
    from physlearn.drivers.errors import InstrumentReplyError
    from physlearn.drivers.instruments.memristor_board import MemristorBoard

    address, t, srv = _canned_board({"MEM:COUN?": "8", "MEM:PULS:MAX?": reply})
    try:
        with pytest.raises(InstrumentReplyError, match=r"to 'MEM:PULS:MAX\?'; expected at least"):
            MemristorBoard(f"mem_bad{len(reply)}", address, visalib="@py", timeout=2)
    finally:
        srv.close()
        t.join(5)
