"""``python -m lassoprune`` is the ``lassoprune`` command."""

from lassoprune.cli import main

raise SystemExit(main())
