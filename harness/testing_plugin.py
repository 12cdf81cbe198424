"""The rlhf-harness pytest plugin: conformance tests of installed algorithms, from the command line.

Registered with pytest through the entry point ``rlhf_harness`` of group ``pytest11`` (in
rlhf-harness's ``pyproject.toml``), so any pytest run in an environment with rlhf-harness
installed has the options::

    pytest --rlhf-conformance=reinforce,dpo \\
           --rlhf-conformance-config='reinforce={learning_rate: 0.1}' \\
           --rlhf-conformance-config='dpo={learning_rate: 0.05, optimizer: adam, warmup_steps: 0}'

``--rlhf-conformance=ALGO[,ALGO]`` (repeatable) makes the session one test per algorithm and
check of :mod:`harness.testing`, named ``rlhf_conformance::ALGO[CHECK]``; algorithms are looked
up by name among the installed plugins. ``--rlhf-conformance-config=ALGO=MAPPING`` (repeatable)
gives ALGO's config as a YAML (or JSON) mapping, ``--rlhf-conformance-checks`` limits the checks.

With the option, the conformance tests are the *only* tests: wherever pytest is invoked (the
root of a project whose ``testpaths`` hold hundreds of tests, a plugin's folder), no test module
is collected (``pytest_ignore_collect``) and anything collected all the same is deselected. To
run a plugin's own tests, run pytest on them without the option. A failure prints the check's
one-line message. Without ``--rlhf-conformance`` the plugin does nothing, and it imports neither
torch nor the harness until it is asked to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

OPTION = "--rlhf-conformance"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rlhf-harness", "rlhf-harness conformance kit")
    group.addoption(
        OPTION, action="append", default=[], metavar="ALGO[,ALGO]",
        help="add the conformance tests of these installed algorithms to the session.",
    )
    group.addoption(
        f"{OPTION}-config", action="append", default=[], metavar="ALGO=MAPPING",
        help="config of ALGO for the conformance tests, a YAML or JSON mapping, e.g. "
        "'ppo={learning_rate: 0.05}' (repeatable).",
    )
    group.addoption(
        f"{OPTION}-checks", default=None, metavar="CHECK[,CHECK]",
        help="run only these checks (config, metrics, accounting, determinism, finite, "
        "improves).",
    )


def parse_options(config: pytest.Config) -> tuple[list[str], dict[str, dict[str, Any]], tuple]:
    """The algorithms, their configs and the checks the options ask for; a bad value is a
    :class:`pytest.UsageError` saying which."""
    import yaml

    from harness.testing import CHECKS

    names: list[str] = []
    for value in config.getoption(OPTION) or []:
        names.extend(n.strip() for n in value.split(",") if n.strip())
    names = list(dict.fromkeys(names))
    configs: dict[str, dict[str, Any]] = {}
    for value in config.getoption(f"{OPTION}-config") or []:
        name, sep, text = value.partition("=")
        name = name.strip()
        if not sep or not name:
            raise pytest.UsageError(
                f"{OPTION}-config expects ALGO=MAPPING, e.g. 'ppo={{learning_rate: 0.05}}'; "
                f"got {value!r}"
            )
        try:
            mapping = yaml.safe_load(text) if text.strip() else {}
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
            raise pytest.UsageError(
                f"{OPTION}-config for '{name}': not YAML: {problem} (in {text!r})"
            ) from None
        if not isinstance(mapping, dict):
            raise pytest.UsageError(
                f"{OPTION}-config for '{name}': expected a mapping of Config fields, got {text!r}"
            )
        if name not in names:
            raise pytest.UsageError(
                f"{OPTION}-config names '{name}', which {OPTION} does not "
                f"(it names: {', '.join(names) or 'nothing'})"
            )
        configs[name] = {**configs.get(name, {}), **mapping}
    checks: tuple = CHECKS
    chosen = config.getoption(f"{OPTION}-checks")
    if chosen:
        checks = tuple(c.strip() for c in chosen.split(",") if c.strip())
        unknown = [c for c in checks if c not in CHECKS]
        if unknown:
            raise pytest.UsageError(
                f"{OPTION}-checks: unknown check(s) {', '.join(unknown)}; checks: "
                f"{', '.join(CHECKS)}"
            )
    return names, configs, checks


_PARSED = pytest.StashKey[tuple[list[str], dict[str, dict[str, Any]], tuple]]()


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption(OPTION, default=None):
        config.stash[_PARSED] = parse_options(config)  # bad values stop pytest here


class ConformanceItem(pytest.Item):
    """One conformance check of one algorithm: ``rlhf_conformance::ALGO[CHECK]``."""

    def __init__(self, *, kit: Any, check: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kit = kit
        self.check = check

    def runtest(self) -> None:
        self.kit.check(self.check)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from harness.testing import ConformanceError

        if isinstance(excinfo.value, ConformanceError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"rlhf-harness conformance of '{self.kit.name}': {self.check}"


class ConformanceCollector(pytest.Collector):
    """The conformance tests the options ask for, one item per algorithm and check."""

    def collect(self) -> list[pytest.Item]:
        from harness.testing import Conformance

        names, configs, checks = self.config.stash[_PARSED]
        items: list[pytest.Item] = []
        for name in names:
            kit = Conformance(name, configs.get(name))
            items.extend(
                ConformanceItem.from_parent(self, name=f"{name}[{check}]", kit=kit, check=check)
                for check in checks
            )
        return items


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With ``--rlhf-conformance``, collect no file or folder: the checks are the session."""
    if _PARSED in config.stash and collection_path.is_file():
        return True
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Make the asked-for conformance tests the session's items (before ``-k`` and ``-m``
    deselect), deselecting anything else that was collected."""
    if _PARSED not in config.stash:
        return
    if items:
        config.hook.pytest_deselected(items=list(items))
        items.clear()
    collector = ConformanceCollector.from_parent(
        session, name="rlhf_conformance", nodeid="rlhf_conformance"
    )
    items.extend(session.genitems(collector))
