"""rlhf-harness: head-to-head benchmarks of preference-based fine-tuning algorithms.

The public API that plugins import lives here and in the modules it names:

- :data:`hookimpl` marks a plugin's hook implementations (see :mod:`harness.hookspecs`).
- :mod:`harness.preference` holds the preference models.
- :class:`HarnessError` is the base of every error the harness reports to its user.

Importing this package is cheap: it does not import torch.
"""

from __future__ import annotations

from harness.errors import HarnessError
from harness.hookspecs import hookimpl

__version__ = "0.2.0"

__all__ = ["HarnessError", "__version__", "hookimpl"]
