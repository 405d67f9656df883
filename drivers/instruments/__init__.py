"""Our qcodes instrument drivers (SCPI over VISA), one module per instrument.

:mod:`~physlearn.drivers.instruments.base` holds what every driver shares (strict reply
parsing, reconnect, compound writes, batches, I/O timing); :mod:`~.source`,
:mod:`~.dmm` (the meter behind its multiplexer), :mod:`~.pots` (the digital-potentiometer bank)
and :mod:`~.switch` the instruments. A qcodes station YAML names them by module, e.g.
``type: physlearn.drivers.instruments.source.VirtualLabSource``. Importing this package imports
no qcodes; the modules inside do. How to wire a bench and write a driver for your own
instruments: ``lab_protocols.md``.
"""
