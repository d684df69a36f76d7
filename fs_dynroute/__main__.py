"""Entry point for ``python -m fs_dynroute``."""

from fs_dynroute.cli import main

raise SystemExit(main())
