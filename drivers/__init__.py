"""Instrument-backed physical systems and the virtual lab (installed as ``physlearn.drivers``).

* :mod:`physlearn.drivers.config` -- the ``system: kind: station`` config: a qcodes Station YAML,
  the roles its instruments play (input sources, nudge sources, probes, weight actuators, an
  optional switch matrix) and the safety envelope. Validating it imports neither qcodes nor
  pyvisa.
* :mod:`physlearn.drivers.station_system` -- :class:`StationSystem`, the PhysicalSystem that
  trains a resistor network on the bench through qcodes instruments.
* :mod:`physlearn.drivers.safety` -- the envelope: per-role limits, ramp step and rate,
  compliance, the safe state; nothing outside it is ever sent to an instrument.
* :mod:`physlearn.drivers.instruments` -- qcodes ``VisaInstrument`` drivers of the virtual-lab
  instruments (they speak SCPI through pyvisa; with ``visalib: '@py'`` over a real TCP socket).
* :mod:`physlearn.drivers.virtual_lab` and :mod:`physlearn.drivers.scpi_server` -- the virtual
  lab: a simulated resistor network behind instruments that behave like hardware (noise,
  resolution, settling, drift, device spread, injected faults), served over SCPI on 127.0.0.1
  with bounded resources; :mod:`physlearn.drivers.scpi` parses its commands and keeps its
  error queues.
* :mod:`physlearn.drivers.lab_config` -- the virtual lab's config (network, instruments, wiring,
  imperfections, faults).
* :mod:`physlearn.drivers.tapmap` -- conductance vs potentiometer tap (nominal law or calibration).
* :mod:`physlearn.drivers.errors` -- bench errors (light: no qcodes).
* :mod:`physlearn.drivers.dryrun` and :mod:`physlearn.drivers.cli` -- ``physlearn run --dry-run``,
  ``physlearn lab serve`` and ``physlearn lab calibrate``.
* :mod:`physlearn.drivers.testing` -- serve a lab and point an experiment at it (tests, notebooks).
* ``*.yaml`` -- pyvisa-sim descriptions of the instruments for protocol tests.

Nothing here is imported by ``import physlearn.config`` except :mod:`physlearn.drivers.config`,
which is pure pydantic. The operator's procedure is ``lab_protocols.md`` at the top of the repo.
"""
