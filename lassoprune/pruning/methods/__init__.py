"""The pruning methods, one module each; importing this package registers every one of them.

Every module in this folder is imported here (found by listing the folder), so
a new method is one new file that calls
:func:`~lassoprune.pruning.method.register_method` (or
:func:`~lassoprune.pruning.criteria.register_criterion` for a score-only
criterion) at import time, and nothing else.

Built in:

- ``magnitude``: ``l1``, ``l2``, ``bn-scale``
- ``random_scores``: ``random``
- ``taylor``: ``taylor`` (needs data)
- ``hsic_lasso``: ``sglp-ib``, ``stlp-ib``, ``hsic-ib``, ``class-lasso`` (need data; decide widths)
- ``dwgl_vote``: ``dwgl-vote`` (after DWGL sparse training; a target or a threshold)
"""

from __future__ import annotations

import importlib
import pkgutil

METHOD_MODULES: tuple[str, ...] = tuple(
    sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))
)

for _name in METHOD_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
