"""SPICE netlists of resistor networks, and running them through ngspice, to cross-check physlearn.

:func:`to_netlist` writes any linear
(:class:`~physlearn.simulators.resistor.linear.LinearResistorNetwork`) or non-linear
(:class:`~physlearn.simulators.resistor.nonlinear.NonlinearResistorNetwork`) network with one or
many input patterns (and optionally a nudge) as a SPICE deck that ngspice runs unchanged:

* node ``i`` of the graph is ``n<i>``; bias source ``k`` drives node ``b<k>``; SPICE's ground
  ``0`` is the reference of every source (a network's own 0 V ground is a source ``VGND``);
* each trainable edge is a resistor ``R<e>`` of 1/g_e ohm (transistor edges are written as their
  conductance g(V_G) at the current gate voltages: the model is an ohmic channel);
* input channel ``k`` is a voltage source ``VIN<k>`` on its input node;
* diodes are ``D<d> anode cathode dmod`` with the Shockley model's ``.model`` card (ideal diodes
  do not exist in SPICE: :func:`to_netlist` refuses them; export the same network with a Shockley
  model instead and check the ideal solver against its own KKT conditions);
* ``.options`` pin the temperature to the model's (TEMP = TNOM, so IS is used as given) and
  tighten the tolerances (RELTOL 1e-12, VNTOL 1e-12 V, ABSTOL 1e-15 A) so that ngspice's answer
  is accurate to far better than 1e-6 relative.

One pattern gives a ``.op``. A batch gives one ``.dc`` sweep of a dummy source ``VPATTERN`` over
0, 1, ..., batch - 1 in which every input source reads its value from a piecewise-linear table
of the pattern index (``B`` sources with ``pwl``): ngspice solves every pattern in one analysis of
one process, continuing each operating point from the previous one (``mode="sweep"``, the
fastest batch SPICE offers). ``mode="alter"`` instead writes a ``.control`` script that sets the
sources with ``alter`` and runs ``op`` once per pattern, still in one process.

:func:`run_ngspice` runs a deck in batch mode and returns the node voltages; :func:`read_raw`
parses ngspice's binary raw files.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from physlearn.simulators.resistor.elements import SPICE_TNOM, DiodeModel
from physlearn.system import FloatArray, IntArray, Nudge, PhysicalSystem

Mode = Literal["auto", "op", "sweep", "alter"]

DEFAULT_OPTIONS: dict[str, float] = {
    "reltol": 1e-12,
    "abstol": 1e-15,
    "vntol": 1e-12,
    "gmin": 1e-15,
    "itl1": 1000,
    "itl2": 1000,
}


@dataclass(frozen=True)
class Circuit:
    """A network as plain arrays (what a netlist needs).

    Attributes:
        n_nodes: graph nodes (``n<i>``) -- bias sources are separate (``b<k>``).
        resistors: ``(E, 2)`` node pairs; ``conductance`` ``(E,)`` in S.
        input_nodes: node of each input channel (``VIN<k>``).
        ground_nodes: nodes held at 0 V by the network's own ground source.
        bias: ``(n_bias,)`` bias source voltages (V) at nodes ``b<k>``.
        diodes: ``(m, 2)`` anode, cathode; indices ``>= n_nodes`` are bias source
            ``index - n_nodes``.
        diode_model: the diodes' law (None without diodes).
        output_nodes: the outputs (for nudges).
    """

    n_nodes: int
    resistors: IntArray
    conductance: FloatArray
    input_nodes: IntArray
    ground_nodes: IntArray
    bias: FloatArray
    diodes: IntArray
    diode_model: DiodeModel | None
    output_nodes: IntArray


def circuit_of(system: PhysicalSystem) -> Circuit:
    """The :class:`Circuit` of a linear or non-linear resistor network."""
    from physlearn.simulators.resistor.linear import LinearResistorNetwork
    from physlearn.simulators.resistor.nonlinear import NonlinearResistorNetwork

    if isinstance(system, NonlinearResistorNetwork):
        c = system.circuit()
        return Circuit(
            n_nodes=int(system.graph.n_nodes),
            resistors=c["resistors"],
            conductance=c["conductance"],
            input_nodes=c["input_nodes"],
            ground_nodes=c["ground_nodes"],
            bias=c["bias"],
            diodes=c["diodes"] if system.n_diodes else np.zeros((0, 2), dtype=np.int64),
            diode_model=system.model if system.n_diodes else None,
            output_nodes=c["output_nodes"],
        )
    if isinstance(system, LinearResistorNetwork):
        g = system.graph
        n_in = system.inputs.size
        return Circuit(
            n_nodes=int(g.n_nodes),
            resistors=np.asarray(g.edges).copy(),
            conductance=system.get_parameters()["conductance"],
            input_nodes=np.asarray(g.input_nodes[:n_in]).copy(),
            ground_nodes=np.asarray(g.input_nodes[n_in:]).copy(),
            bias=np.zeros(0),
            diodes=np.zeros((0, 2), dtype=np.int64),
            diode_model=None,
            output_nodes=np.asarray(g.output_nodes).copy(),
        )
    raise TypeError(
        f"cannot export a {type(system).__name__} to SPICE: only resistor networks "
        "(LinearResistorNetwork, NonlinearResistorNetwork) are circuits"
    )


def _num(x: float) -> str:
    """The shortest decimal that reads back as the same double."""
    return repr(float(x))


def _node(c: Circuit, i: int) -> str:
    return f"n{i}" if i < c.n_nodes else f"b{i - c.n_nodes}"


def to_netlist(
    system: PhysicalSystem,
    inputs: ArrayLike,
    *,
    nudge: Nudge | None = None,
    mode: Mode = "auto",
    title: str | None = None,
    options: dict[str, float] | None = None,
    raw_path: str | None = None,
) -> str:
    """A SPICE deck of ``system`` driven by ``inputs`` (``(n_in,)`` or ``(batch, n_in)``, V).

    Args:
        nudge: optionally realise a nudge: ``target`` (beta > 0 S) as a resistor 1/beta from each
            output to a source at the target; ``error`` as current sources -beta eps_o into the
            outputs (A); ``clamp`` as voltage sources on the outputs.
        mode: ``"op"`` (one pattern), ``"sweep"`` (a batch as one ``.dc`` sweep), ``"alter"``
            (a ``.control`` loop of ``alter`` + ``op``); ``"auto"``: op for one pattern, else
            sweep.
        title: first line of the deck.
        options: ``.options`` overriding :data:`DEFAULT_OPTIONS`.
        raw_path: for ``"alter"``: where the ``.control`` script appends the results (binary raw,
            one plot per pattern); default ``physlearn.raw``.

    Raises ``ValueError`` for ideal diodes (no SPICE equivalent), a non-positive target beta, or
    inputs of the wrong shape.
    """
    c = circuit_of(system)
    x = _patterns(c, inputs)
    batch = x.shape[0]
    if mode == "auto":
        mode = "op" if batch == 1 else "sweep"
    if mode == "op" and batch != 1:
        raise ValueError("mode 'op' takes one input pattern; use 'sweep' or 'alter' for a batch")
    _check_exportable(c)
    temp_c = (c.diode_model.temperature if c.diode_model else SPICE_TNOM) - 273.15
    opts = {**DEFAULT_OPTIONS, **(options or {}), "temp": temp_c, "tnom": temp_c}
    lines = [f"* {title or f'physlearn export of {type(system).__name__}'}"]
    lines.append(
        f"* {c.n_nodes} nodes, {len(c.resistors)} resistors, {c.input_nodes.size} inputs, "
        f"{c.bias.size} bias sources, {len(c.diodes)} diodes, {batch} pattern(s)"
    )
    lines += _elements(c)
    sources = _Sources(mode, batch)
    for k, n in enumerate(c.input_nodes):
        sources.add("V", f"IN{k}", f"n{n}", "0", x[:, k], f"vin{k}")
    if nudge is not None:
        _nudge_sources(c, nudge, batch, sources)
    lines += sources.lines
    lines.append(".options " + " ".join(f"{k}={_num(v)}" for k, v in opts.items()))
    lines += _analysis(mode, batch, sources.alter, raw_path)
    lines.append(".end")
    return "\n".join(lines) + "\n"


def _patterns(c: Circuit, inputs: ArrayLike) -> FloatArray:
    """The input patterns ``(batch, n_in)`` (V); refuses a wrong shape or non-finite values."""
    x = np.asarray(inputs, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    n_in = c.input_nodes.size
    if x.ndim != 2 or x.shape[1] != n_in or x.shape[0] < 1 or not np.all(np.isfinite(x)):
        raise ValueError(f"inputs must be finite volts of shape ({n_in},) or (batch, {n_in})")
    return x


def _check_exportable(c: Circuit) -> None:
    """Refuse what SPICE cannot hold: ideal diodes and non-positive or infinite conductances."""
    if c.diode_model is not None and c.diode_model.kind == "ideal":
        raise ValueError(
            "ideal diodes have no SPICE model: export the same network with a Shockley model "
            "(--set system.diodes.model.kind=shockley) and check the ideal solver against its "
            "KKT conditions"
        )
    if np.any(c.conductance <= 0) or not np.all(np.isfinite(c.conductance)):
        raise ValueError("every conductance must be finite and > 0 S to be written as a resistor")


def _elements(c: Circuit) -> list[str]:
    """The fixed part of the deck: resistors, ground and bias sources, diodes and their model."""
    lines = []
    for e, (a, b) in enumerate(c.resistors):
        lines.append(f"R{e} n{a} n{b} {_num(1.0 / c.conductance[e])}")
    for k, n in enumerate(c.ground_nodes):
        lines.append(f"VGND{k} n{n} 0 DC 0")
    for k, v in enumerate(c.bias):
        lines.append(f"VB{k} b{k} 0 DC {_num(v)}")
    if c.diode_model is not None and len(c.diodes):
        lines.append(c.diode_model.spice_model("dmod"))
        for d, (a, k) in enumerate(c.diodes):
            lines.append(f"D{d} {_node(c, int(a))} {_node(c, int(k))} dmod")
    return lines


class _Sources:
    """The deck's pattern-dependent sources (``lines``) and, for ``alter`` mode, the name and
    per-pattern values of each (``alter``)."""

    def __init__(self, mode: Mode, batch: int) -> None:
        self.mode = mode
        self.batch = batch
        self.lines: list[str] = []
        self.alter: list[tuple[str, FloatArray]] = []

    def add(self, kind: str, name: str, np_: str, nm: str, values: FloatArray, alias: str) -> None:
        """A source whose value is ``values[p]`` for pattern p (V or A), ``alias`` in alter."""
        if self.mode == "sweep" and self.batch > 1:
            pts = ", ".join(f"{p}, {_num(v)}" for p, v in enumerate(values))
            self.lines.append(f"B{name} {np_} {nm} {kind} = pwl(V(pattern), {pts})")
        else:
            letter = "V" if kind == "V" else "I"
            self.lines.append(f"{letter}{name} {np_} {nm} DC {_num(values[0])}")
        self.alter.append((alias, values))


def _nudge_sources(c: Circuit, nudge: Nudge, batch: int, sources: _Sources) -> None:
    """Realise ``nudge`` on the outputs: target resistors 1/beta to target sources, error
    current sources or clamp voltage sources."""
    vals = np.asarray(nudge.values, dtype=np.float64).reshape(batch, -1)
    beta = complex(nudge.beta)
    if beta.imag != 0 or not math.isfinite(beta.real):
        raise ValueError("SPICE realises only real, finite nudges")
    for o, node in enumerate(c.output_nodes):
        if nudge.kind == "target":
            if beta.real <= 0:
                raise ValueError("a target nudge is a conductance beta > 0 S in SPICE")
            sources.lines.append(f"RNUDGE{o} n{node} t{o} {_num(1.0 / beta.real)}")
            sources.add("V", f"TGT{o}", f"t{o}", "0", vals[:, o], f"vtgt{o}")
        elif nudge.kind == "error":
            sources.add("I", f"ERR{o}", "0", f"n{node}", -beta.real * vals[:, o], f"ierr{o}")
        else:
            sources.add("V", f"CLAMP{o}", f"n{node}", "0", vals[:, o], f"vclamp{o}")


def _analysis(
    mode: Mode, batch: int, alter: list[tuple[str, FloatArray]], raw_path: str | None
) -> list[str]:
    """The analysis: ``.op``, a ``.dc`` sweep of the pattern index, or an alter loop."""
    if mode == "op":
        return [".op"]
    if mode == "sweep":
        return ["VPATTERN pattern 0 DC 0", f".dc VPATTERN 0 {batch - 1} 1"]
    raw = raw_path or "physlearn.raw"
    lines = [".control", "set appendwrite"]
    for p in range(batch):
        for name, values in alter:
            lines.append(f"alter {name} dc = {_num(values[p])}")
        lines.append("op")
        lines.append(f"write {raw} all")
    lines.append("quit")
    lines.append(".endc")
    return lines


# -- running ngspice ----------------------------------------------------------------------------
def find_ngspice() -> str | None:
    """Path of the ``ngspice`` executable, or None."""
    return shutil.which("ngspice")


@dataclass
class RawPlot:
    """One plot of a raw file: ``names`` of the vectors and ``values`` ``(points, vectors)``."""

    title: str
    names: list[str]
    values: FloatArray

    def column(self, name: str) -> FloatArray:
        return self.values[:, self.names.index(name.lower())]


def read_raw(path: str | Path) -> list[RawPlot]:
    """Parse an ngspice raw file (binary or ASCII, real data) into its plots."""
    data = Path(path).read_bytes()
    plots: list[RawPlot] = []
    pos = 0
    while pos < len(data):
        header: dict[str, str] = {}
        names: list[str] = []
        while True:
            end = data.index(b"\n", pos)
            line = data[pos:end].decode("latin-1")
            pos = end + 1
            if line.startswith("Variables:"):
                nvar = int(header["No. Variables"])
                for _ in range(nvar):
                    end = data.index(b"\n", pos)
                    parts = data[pos:end].decode("latin-1").split()
                    pos = end + 1
                    names.append(parts[1].lower())
                continue
            if line.startswith("Binary:") or line.startswith("Values:"):
                binary = line.startswith("Binary:")
                break
            key, _, value = line.partition(":")
            header[key.strip()] = value.strip()
        if "complex" in header.get("Flags", ""):
            raise ValueError("complex raw data is not supported (DC analyses are real)")
        nvar, npts = int(header["No. Variables"]), int(header["No. Points"])
        if binary:
            nbytes = 8 * nvar * npts
            vals = np.frombuffer(data[pos : pos + nbytes], dtype="<f8").reshape(npts, nvar)
            pos += nbytes
        else:
            tokens: list[float] = []
            while len(tokens) < npts * (nvar + 1):
                end = data.find(b"\n", pos)
                end = len(data) if end < 0 else end
                tokens += [float(t) for t in data[pos:end].split()]
                pos = end + 1
            vals = np.asarray(tokens).reshape(npts, nvar + 1)[:, 1:]
        plots.append(RawPlot(header.get("Plotname", ""), names, np.array(vals)))
        while pos < len(data) and data[pos : pos + 1] in (b"\n", b"\r"):
            pos += 1
    return plots


@dataclass
class SpiceResult:
    """Node voltages computed by ngspice: ``voltages`` ``(patterns, n_nodes)`` (graph nodes, V),
    ``bias`` ``(patterns, n_bias)``, and the wall-clock seconds of the ngspice process."""

    voltages: FloatArray
    bias: FloatArray
    seconds: float
    log: str


_VNAME = re.compile(r"^v\((n|b)(\d+)\)$|^(n|b)(\d+)$")


def run_ngspice(
    netlist: str,
    n_nodes: int,
    n_bias: int = 0,
    *,
    executable: str | None = None,
    timeout: float = 3600.0,
    workdir: str | Path | None = None,
) -> SpiceResult:
    """Run ``netlist`` (from :func:`to_netlist`) in ngspice batch mode; return node voltages.

    ``op`` and ``sweep`` decks run as ``ngspice -b -r out.raw deck``; ``alter`` decks write their
    own raw file from their ``.control`` block. Raises ``FileNotFoundError`` without ngspice and
    ``RuntimeError`` (with ngspice's log) when it fails.
    """
    import time

    exe = executable or find_ngspice()
    if exe is None:
        raise FileNotFoundError("ngspice is not installed (Debian: apt-get install ngspice)")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        deck = Path(tmp) / "deck.cir"
        raw = Path(tmp) / "out.raw"
        text = netlist
        control = ".control" in netlist
        if control:
            text = re.sub(r"^write \S+ all$", f"write {raw} all", netlist, flags=re.M)
            raw.unlink(missing_ok=True)
        deck.write_text(text)
        cmd = [exe, "-b", str(deck)] if control else [exe, "-b", "-r", str(raw), str(deck)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        seconds = time.perf_counter() - t0
        log = proc.stdout + proc.stderr
        if proc.returncode != 0 or not raw.exists():
            raise RuntimeError(f"ngspice failed (exit {proc.returncode}):\n{log[-4000:]}")
        plots = read_raw(raw)
    return _voltages(plots, n_nodes, n_bias, seconds, log)


def _voltages(
    plots: list[RawPlot], n_nodes: int, n_bias: int, seconds: float, log: str
) -> SpiceResult:
    rows_v: list[FloatArray] = []
    rows_b: list[FloatArray] = []
    for plot in plots:
        v = np.full((plot.values.shape[0], n_nodes), np.nan)
        b = np.full((plot.values.shape[0], n_bias), np.nan)
        for col, name in enumerate(plot.names):
            mt = _VNAME.match(name)
            if not mt:
                continue
            kind = mt.group(1) or mt.group(3)
            idx = int(mt.group(2) or mt.group(4))
            if kind == "n" and idx < n_nodes:
                v[:, idx] = plot.values[:, col]
            elif kind == "b" and idx < n_bias:
                b[:, idx] = plot.values[:, col]
        rows_v.append(v)
        rows_b.append(b)
    return SpiceResult(np.concatenate(rows_v), np.concatenate(rows_b), seconds, log)


def simulate(
    system: PhysicalSystem,
    inputs: ArrayLike,
    *,
    nudge: Nudge | None = None,
    mode: Mode = "auto",
    **kw: Any,
) -> SpiceResult:
    """Export ``system`` with ``inputs`` and run it in ngspice (see :func:`run_ngspice`)."""
    c = circuit_of(system)
    deck = to_netlist(system, inputs, nudge=nudge, mode=mode)
    return run_ngspice(deck, c.n_nodes, c.bias.size, **kw)
