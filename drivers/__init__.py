"""Instrument-backed physical systems and the virtual lab (installed as ``physlearn.drivers``).

* :mod:`physlearn.drivers.station` -- the ``system: kind: station`` machine: its config, the
  :class:`~physlearn.drivers.station.system.StationSystem` that trains a resistor network on the
  bench through a qcodes station, the safety envelope, the tap map, the dry run.
* :mod:`physlearn.drivers.instruments` -- our qcodes ``VisaInstrument`` drivers (source, DMM
  with multiplexer, potentiometer bank, switch matrix), speaking SCPI through pyvisa.
* :mod:`physlearn.drivers.virtual_lab` -- the virtual lab: a simulated bench behind instruments
  that behave like hardware, served over SCPI on 127.0.0.1, and its config.
* :mod:`physlearn.drivers.errors` -- bench errors, raised by the instrument drivers and the
  station alike (light: no qcodes).
* :mod:`physlearn.drivers.cli` -- ``physlearn lab serve`` (virtual lab) and ``physlearn lab
  calibrate`` (station).

Nothing here is imported by ``import physlearn.config``; validating a station config imports
only :mod:`physlearn.drivers.station.config`, which is pure pydantic. The operator's procedure
is ``lab_protocols.md`` at the top of the repo.
"""
