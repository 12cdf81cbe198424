"""Built-in tasks, registered through the ``register_tasks`` hook like any plugin's."""

from __future__ import annotations

from harness.tasks.base import Task

__all__ = ["Task"]
