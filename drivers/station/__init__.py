"""The bench machine (``system: kind: station``): a resistor network trained through qcodes.

:mod:`~physlearn.drivers.station.config` is the config (a qcodes Station YAML, the roles its
instruments play, the safety envelope; pure pydantic, no qcodes);
:mod:`~physlearn.drivers.station.system` the :class:`StationSystem` PhysicalSystem (binding the
roles, transactions with retry and reconnect, calibration), built from the parts of a phase in
:mod:`~physlearn.drivers.station.phases`; :mod:`~physlearn.drivers.station.safety` the envelope
enforced before anything is written; :mod:`~physlearn.drivers.station.tapmap` conductance vs
potentiometer tap (nominal law or calibration); :mod:`~physlearn.drivers.station.dryrun`
``physlearn run --dry-run``. The operator's procedure is ``lab_protocols.md``.
"""
