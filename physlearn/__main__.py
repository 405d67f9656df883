"""``python -m physlearn ...``: the same command line as the ``physlearn`` script."""

from physlearn.cli import main

raise SystemExit(main())
