"""rlhf-harness: head-to-head benchmarks of preference-based fine-tuning algorithms.

The public API that plugins import lives here and in the modules it names:

- :data:`hookimpl` marks a plugin's hook implementations (see :mod:`harness.hookspecs`).
- :mod:`harness.preference` holds the preference models.
- :class:`HarnessError` is the base of every error the harness reports to its user.

Below the public API the core is grouped by role, each package opening with what it owns and
what it may import: :mod:`harness.models` (policies and models), :mod:`harness.engine` (what
runs suites), :mod:`harness.suite` (suite files), :mod:`harness.report` (reports),
:mod:`harness.devkit` (tools for plugin authors and maintainers), and :mod:`harness.cli` above
them all (``docs/architecture.md``, "Modules by role").

Importing this package is cheap: it does not import torch.
"""

from __future__ import annotations

from harness.errors import HarnessError
from harness.hookspecs import hookimpl

__version__ = "0.2.0"

__all__ = ["HarnessError", "__version__", "hookimpl"]
