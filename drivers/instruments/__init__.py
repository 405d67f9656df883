"""Our qcodes instrument drivers (SCPI over VISA), one module per instrument.

:mod:`~physlearn.drivers.instruments.base` holds what every driver shares (strict reply
parsing, clear I/O errors, ``set_address`` reopening a working session); :mod:`~.source`,
:mod:`~.dmm` (the meter behind its multiplexer), :mod:`~.pots` (the digital-potentiometer bank),
:mod:`~.switch` and :mod:`~.memristor_board` the instruments. They are plain qcodes drivers:
parameters with ``set_cmd``/``get_cmd`` and validators, nothing but qcodes' public API. A qcodes
station YAML names them by module, e.g.
``type: physlearn.drivers.instruments.source.VirtualLabSource``. Importing this package imports
no qcodes; the modules inside do. How to wire a bench and write a driver for your own
instruments: ``lab_protocols.md``.
"""
