"""The virtual lab: a simulated resistor-network bench behind instruments that behave like
hardware, served over SCPI.

:mod:`~physlearn.drivers.virtual_lab.bench` is the physics (noise, settling, drift, device
spread, compliance trips); :mod:`~physlearn.drivers.virtual_lab.lab` the instruments and their
SCPI command sets; :mod:`~physlearn.drivers.virtual_lab.scpi` the command parsing and error
queues; :mod:`~physlearn.drivers.virtual_lab.server` the bounded server on 127.0.0.1 with fault
injection; :mod:`~physlearn.drivers.virtual_lab.config` the lab's YAML;
:mod:`~physlearn.drivers.virtual_lab.testing` serving a lab for tests and notebooks;
``virtual_lab_sim.yaml`` a pyvisa-sim description of the instruments for protocol tests. How to
run it and point a station at it: ``lab_protocols.md``.
"""
