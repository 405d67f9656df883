"""The bench machine (``system: kind: station``): a resistor network trained through qcodes.

:mod:`~physlearn.drivers.station.config` and :mod:`~physlearn.drivers.station.roles` are the
config (a qcodes Station YAML, the roles its instruments play, the safety envelope; pure
pydantic, no qcodes); :mod:`~physlearn.drivers.station.system` the :class:`StationSystem`
PhysicalSystem, built from :mod:`~physlearn.drivers.station.binding` (roles to qcodes
parameters, public API only), :mod:`~physlearn.drivers.station.transactions` (retry and
reconnect), :mod:`~physlearn.drivers.station.measurement` (one phase),
:mod:`~physlearn.drivers.station.probes` (reading the nodes),
:mod:`~physlearn.drivers.station.weights` (potentiometers or memristors, with
:mod:`~physlearn.drivers.station.programming` and :mod:`~physlearn.drivers.station.tapmap`),
:mod:`~physlearn.drivers.station.nudges` and :mod:`~physlearn.drivers.station.safety` (the
envelope, checked before anything is written); :mod:`~physlearn.drivers.station.dryrun` is
``physlearn run --dry-run``. The operator's procedure is ``lab_protocols.md``.
"""
