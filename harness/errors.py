"""Errors the harness reports to its user as one line, naming the culprit."""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error that the CLI prints as a single line (no traceback)."""


class PluginError(HarnessError):
    """A plugin failed to import, to validate, or registered something invalid."""


class UnknownNameError(HarnessError, KeyError):
    """A name that no plugin registered was asked for."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(PluginError):
    """Two plugins registered the same name for the same kind of thing."""


class ConfigError(HarnessError):
    """A file or a configuration value is invalid."""


class StoreError(HarnessError):
    """The run store cannot be used as asked: held by another process, not a folder, full."""
