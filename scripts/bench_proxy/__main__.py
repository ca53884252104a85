"""``python -m scripts.bench_proxy``: see the package docstring."""

from __future__ import annotations

from .run import main

raise SystemExit(main())
