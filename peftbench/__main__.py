"""``python -m peftbench ...``: the command line of :mod:`peftbench.cli`."""

from peftbench.cli import main

raise SystemExit(main())
