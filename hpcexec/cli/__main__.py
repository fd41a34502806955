"""``python -m hpcexec.cli``: the ``hpcexec`` command."""

from . import main

raise SystemExit(main())
