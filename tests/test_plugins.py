"""The plugin host: discovery, validation, registries, lookups and the messages users see.

Entry-point tests write fake installed distributions (see ``dist_info_path`` in conftest) and
restrict loading to them with ``only=`` or ``RLHF_HARNESS_PLUGINS``, so that real plugins installed
in the environment (``ppo``, ``dpo``, ...) neither help nor break these tests.
"""

from __future__ import annotations

import sys
import types

import pluggy
import pytest

from harness import hookimpl
from harness.engine.plugins import (
    CORE_PLUGINS,
    KINDS,
    ONLY_ENV,
    STRICT_ENV,
    PluginHost,
    get_plugin_host,
)
from harness.errors import DuplicateNameError, HarnessError, PluginError, UnknownNameError
from harness.preference import BradleyTerry, Thurstone

ALGO_SOURCE = """
class Alpha:
    pass

class Beta:
    pass

@hookimpl
def register_algorithms(register):
    register("alpha", Alpha)
    register("beta", Beta)
"""


def dist_plugin_source(algorithm: str) -> str:
    """Source of a plugin module registering one algorithm class named ``Algo``."""
    return f"""
from harness import hookimpl

class Algo:
    pass

@hookimpl
def register_algorithms(register):
    register({algorithm!r}, Algo)
"""


def names_by(host: PluginHost, kind: str, plugin: str) -> set[str]:
    """What ``plugin`` registered for ``kind``: exact, whatever else the core comes to register."""
    return {r.name for r in host.registrations(kind) if r.plugin.name == plugin}


def assert_one_line(message: str) -> None:
    assert message.strip()
    assert "\n" not in message and "\r" not in message


# --- registration and lookup -----------------------------------------------------------------


def test_in_memory_plugins_register_every_kind(make_host, make_plugin):
    algos = make_plugin("algos", ALGO_SOURCE)

    class TaskPlugin:  # an object with hookimpl methods is a plugin too
        class Task:
            pass

        @hookimpl
        def register_tasks(self, register):
            register("arith", self.Task)

    class Evaluator:
        pass

    @hookimpl
    def register_evaluators(register):
        register("gold-reward", Evaluator)

    evaluators = types.SimpleNamespace(register_evaluators=register_evaluators)
    host = make_host(("algos", algos), ("tasks", TaskPlugin()), ("evals", evaluators))

    assert host.failures == []
    assert host.get("algorithm", "alpha") is algos.Alpha
    assert host.algorithm("beta") is algos.Beta
    assert host.get("task", "arith") is TaskPlugin.Task
    assert host.task("arith") is TaskPlugin.Task
    assert host.get("evaluator", "gold-reward") is Evaluator
    assert host.evaluator("gold-reward") is Evaluator
    assert {"alpha", "beta"} <= set(host.names("algorithm"))
    assert names_by(host, "algorithm", "algos") == {"alpha", "beta"}
    assert names_by(host, "task", "tasks") == {"arith"}
    assert names_by(host, "evaluator", "evals") == {"gold-reward"}
    reg = host.registration("task", "arith")
    assert (reg.kind, reg.name, reg.plugin.name) == ("task", "arith", "tasks")
    assert not reg.plugin.core
    assert set(host.plugins) == {*CORE_PLUGINS, "algos", "tasks", "evals"}


def test_core_registers_builtin_preference_models(make_host):
    host = make_host()
    assert host.failures == []
    for name, cls in (("btl", BradleyTerry), ("thurstone", Thurstone)):
        reg = host.registration("preference_model", name)
        assert reg.obj is cls
        assert reg.plugin.core
        assert reg.plugin.name == "harness.preference"
        assert host.preference_model(name) is cls
    assert host.plugins["harness.preference"].describe() == (
        "plugin 'harness.preference' (rlhf-harness core)"
    )


def test_get_plugin_host_returns_independent_hosts(make_host, make_plugin):
    first = make_host(("algos", make_plugin("algos", ALGO_SOURCE)))
    second = make_host()
    assert first.pm is not second.pm
    assert names_by(first, "algorithm", "algos") == {"alpha", "beta"}
    assert not {"alpha", "beta"} & set(second.names("algorithm"))

    class Late:
        @hookimpl
        def register_tasks(self, register):
            register("late", object)

    first.pm.register(Late(), name="late")
    assert first.pm.get_plugin("late") is not None
    assert second.pm.get_plugin("late") is None
    second_impls = second.pm.hook.register_tasks.get_hookimpls()
    assert "late" not in {impl.plugin_name for impl in second_impls}
    assert "algos" in first.plugins and "algos" not in second.plugins
    # A third host loads the same core module again without a duplicate-name clash: registries
    # are per host, not shared module state.
    third = make_host()
    assert third.preference_model("btl") is second.preference_model("btl") is BradleyTerry
    assert "late" not in third.names("task")


def test_plugins_given_as_a_generator_are_all_registered(make_plugin):
    """``plugins`` is an Iterable and is read twice when ``only`` is set; a generator must work."""
    algos = make_plugin("algos", ALGO_SOURCE)
    host = get_plugin_host(only=[], plugins=(p for p in [("algos", algos)]))
    assert host.failures == []
    assert names_by(host, "algorithm", "algos") == {"alpha", "beta"}


# --- entry points ----------------------------------------------------------------------------


def test_entry_point_plugin_is_discovered_with_its_distribution(dist_info_path):
    dist_info = dist_info_path(
        "rlhf-harness-test-algo",
        "2.3.4",
        entry_points={"test-algo": "rlhf_test_algo_plugin"},
        modules={"rlhf_test_algo_plugin": dist_plugin_source("test-algo")},
    )
    assert dist_info.name == "rlhf_harness_test_algo-2.3.4.dist-info"

    host = get_plugin_host(only=["test-algo"])
    assert host.failures == []
    algo = host.algorithm("test-algo")
    assert algo is sys.modules["rlhf_test_algo_plugin"].Algo
    info = host.plugins["test-algo"]
    assert info.name == "test-algo"
    assert info.distribution == "rlhf-harness-test-algo"
    assert info.version == "2.3.4"
    assert info.entry_point == "test-algo = rlhf_test_algo_plugin"
    assert not info.core
    assert host.registration("algorithm", "test-algo").plugin == info

    # Unrestricted discovery finds it as well (other installed plugins may come along).
    assert "test-algo" in get_plugin_host().plugins


def test_import_error_is_contained_and_named(dist_info_path):
    dist_info_path(
        "rlhf-harness-test-broken",
        "0.0.1",
        entry_points={"broken": "rlhf_test_broken_plugin"},
        modules={"rlhf_test_broken_plugin": "raise RuntimeError('boom\\nsecond line')\n"},
    )
    dist_info_path(
        "rlhf-harness-test-good",
        entry_points={"good": "rlhf_test_good_plugin"},
        modules={"rlhf_test_good_plugin": dist_plugin_source("good-algo")},
    )
    host = get_plugin_host(only=["broken", "good"])

    assert host.algorithm("good-algo").__name__ == "Algo"
    assert "good" in host.plugins and "broken" not in host.plugins
    assert [f.plugin.name for f in host.failures] == ["broken"]
    failure = host.failures[0]
    assert_one_line(failure.message)
    assert "'broken'" in failure.message
    assert "rlhf-harness-test-broken 0.0.1" in failure.message
    assert "broken = rlhf_test_broken_plugin" in failure.message
    assert "RuntimeError: boom second line" in failure.message
    assert failure.plugin.distribution == "rlhf-harness-test-broken"


@pytest.mark.parametrize("how", ["argument", "env=1", "env=true", "env=yes"])
def test_strict_mode_raises_on_an_import_error(dist_info_path, monkeypatch, how):
    dist_info_path(
        "rlhf-harness-test-broken",
        entry_points={"broken": "rlhf_test_broken_plugin"},
        modules={"rlhf_test_broken_plugin": "raise RuntimeError('boom')\n"},
    )
    kwargs = {}
    if how == "argument":
        kwargs["strict"] = True
    else:
        monkeypatch.setenv(STRICT_ENV, how.removeprefix("env="))
    with pytest.raises(PluginError, match=r"plugin 'broken'.*RuntimeError: boom") as excinfo:
        get_plugin_host(only=["broken"], **kwargs)
    assert_one_line(str(excinfo.value))
    assert "rlhf-harness-test-broken" in str(excinfo.value)


@pytest.mark.parametrize("value", ["0", "", "no"])
def test_strict_env_off_values_do_not_raise(dist_info_path, monkeypatch, value):
    dist_info_path(
        "rlhf-harness-test-broken",
        entry_points={"broken": "rlhf_test_broken_plugin"},
        modules={"rlhf_test_broken_plugin": "raise RuntimeError('boom')\n"},
    )
    monkeypatch.setenv(STRICT_ENV, value)
    host = get_plugin_host(only=["broken"])
    assert [f.plugin.name for f in host.failures] == ["broken"]


def test_strict_argument_false_overrides_the_environment(dist_info_path, monkeypatch):
    dist_info_path(
        "rlhf-harness-test-broken",
        entry_points={"broken": "rlhf_test_broken_plugin"},
        modules={"rlhf_test_broken_plugin": "raise RuntimeError('boom')\n"},
    )
    monkeypatch.setenv(STRICT_ENV, "1")
    host = get_plugin_host(only=["broken"], strict=False)
    assert [f.plugin.name for f in host.failures] == ["broken"]


def test_entry_point_naming_a_class_is_rejected(dist_info_path):
    dist_info_path(
        "rlhf-harness-test-cls",
        entry_points={"cls-plugin": "rlhf_test_cls_plugin:ClassPlugin"},
        modules={
            "rlhf_test_cls_plugin": """
            from harness import hookimpl

            class ClassPlugin:
                @hookimpl
                def register_algorithms(self, register):
                    register("from-class", object)
            """
        },
    )
    host = get_plugin_host(only=["cls-plugin"])
    assert "cls-plugin" not in host.plugins
    assert "from-class" not in host.names("algorithm")
    [failure] = host.failures
    assert_one_line(failure.message)
    assert "'cls-plugin'" in failure.message
    assert "rlhf-harness-test-cls" in failure.message
    assert "names the class ClassPlugin" in failure.message
    assert "must name a module or a module-level object" in failure.message


# --- RLHF_HARNESS_PLUGINS ----------------------------------------------------------------------


@pytest.fixture
def two_dist_plugins(dist_info_path):
    for letter in "ab":
        dist_info_path(
            f"rlhf-harness-test-only-{letter}",
            entry_points={f"only-{letter}": f"rlhf_test_only_{letter}_plugin"},
            modules={f"rlhf_test_only_{letter}_plugin": dist_plugin_source(f"algo-{letter}")},
        )


def test_only_env_limits_the_entry_points_loaded(two_dist_plugins, monkeypatch):
    monkeypatch.setenv(ONLY_ENV, " only-a ")
    host = get_plugin_host()
    assert host.failures == []
    assert set(host.plugins) == {*CORE_PLUGINS, "only-a"}
    assert "algo-a" in host.names("algorithm") and "algo-b" not in host.names("algorithm")
    assert "rlhf_test_only_b_plugin" not in sys.modules  # not even imported

    monkeypatch.setenv(ONLY_ENV, "only-a,only-b")
    assert {"algo-a", "algo-b"} <= set(get_plugin_host().names("algorithm"))


def test_only_argument_takes_precedence_over_env(two_dist_plugins, monkeypatch):
    monkeypatch.setenv(ONLY_ENV, "only-a")
    host = get_plugin_host(only=["only-b"])
    assert set(host.plugins) == {*CORE_PLUGINS, "only-b"}


def test_only_env_naming_an_uninstalled_plugin_lists_installed_ones(two_dist_plugins, monkeypatch):
    monkeypatch.setenv(ONLY_ENV, "only-a,only-c")
    host = get_plugin_host()
    assert set(host.plugins) == {*CORE_PLUGINS, "only-a"}
    [failure] = host.failures
    assert failure.plugin.name == "only-c"
    assert_one_line(failure.message)
    assert f"{ONLY_ENV} names 'only-c'" in failure.message
    installed = failure.message.split("Installed: ", 1)[1].split(", ")
    assert {"only-a", "only-b"} <= set(installed)


def test_empty_only_env_loads_only_the_core(two_dist_plugins, monkeypatch):
    monkeypatch.setenv(ONLY_ENV, "")
    host = get_plugin_host()
    assert host.failures == []
    assert set(host.plugins) == set(CORE_PLUGINS)
    assert not {"algo-a", "algo-b"} & set(host.names("algorithm"))
    assert {"btl", "thurstone"} <= set(host.names("preference_model"))
    assert "rlhf_test_only_a_plugin" not in sys.modules
    assert "rlhf_test_only_b_plugin" not in sys.modules


# --- invalid plugins ---------------------------------------------------------------------------


def test_misspelled_hook_is_named_with_a_suggestion(make_host, make_plugin):
    typo = make_plugin(
        "typo",
        """
        @hookimpl
        def register_algoritms(register):
            register("never", object)
        """,
    )
    host = make_host(("typo", typo), ("algos", make_plugin("algos", ALGO_SOURCE)))
    [failure] = host.failures
    assert failure.plugin.name == "typo"
    assert_one_line(failure.message)
    assert "plugin 'typo'" in failure.message
    assert "register_algoritms" in failure.message
    assert "did you mean 'register_algorithms'?" in failure.message
    assert "typo" not in host.plugins and host.pm.get_plugin("typo") is None
    assert "never" not in host.names("algorithm")
    assert names_by(host, "algorithm", "algos") == {"alpha", "beta"}  # the others still load


def test_wrong_hook_argument_name_is_named(make_host, make_plugin):
    bad = make_plugin(
        "bad-arg",
        """
        @hookimpl
        def register_algorithms(registr):
            registr("never", object)
        """,
    )
    host = make_host(("bad-arg", bad))
    [failure] = host.failures
    assert failure.plugin.name == "bad-arg"
    assert_one_line(failure.message)
    assert "plugin 'bad-arg'" in failure.message
    assert "registr" in failure.message
    assert host.pm.get_plugin("bad-arg") is None
    assert "never" not in host.names("algorithm")


def test_plugin_with_one_valid_and_one_invalid_hook_is_not_half_registered(make_host, make_plugin):
    """The valid hook must not stay registered (older pluggy left it, and the host crashed)."""
    half = make_plugin(
        "half",
        """
        @hookimpl
        def register_algorithms(register):
            register("half-algo", object)

        @hookimpl
        def register_tasks(registr):
            pass
        """,
    )
    host = make_host(("half", half))
    assert [f.plugin.name for f in host.failures] == ["half"]
    assert host.pm.get_plugin("half") is None
    assert "half-algo" not in host.names("algorithm")


def test_plugin_without_hookimpl_is_rejected(make_host, make_plugin):
    forgot = make_plugin(
        "forgot",
        """
        def register_algorithms(register):  # no @hookimpl
            register("never", object)
        """,
    )
    host = make_host(("forgot", forgot))
    [failure] = host.failures
    assert failure.plugin.name == "forgot"
    assert_one_line(failure.message)
    assert "plugin 'forgot'" in failure.message
    assert "implements no rlhf_harness hook" in failure.message
    for hook in KINDS.values():
        assert hook in failure.message
    assert host.pm.get_plugin("forgot") is None


def test_two_plugins_with_one_name_keep_the_first(make_host, make_plugin):
    algos = make_plugin("algos", ALGO_SOURCE)
    other = make_plugin("other", dist_plugin_source("gamma"))
    host = make_host(("same", algos), ("same", other))
    [failure] = host.failures
    assert_one_line(failure.message)
    assert "plugin 'same' already uses that name" in failure.message
    assert names_by(host, "algorithm", "same") == {"alpha", "beta"}
    assert "gamma" not in host.names("algorithm")


def test_registration_hook_that_raises_is_contained(make_host, make_plugin):
    raiser = make_plugin(
        "raiser",
        """
        @hookimpl
        def register_algorithms(register):
            register("partial", object)
            raise ValueError("bad\\nconfig")

        @hookimpl
        def register_tasks(register):
            register("raiser-task", object)
        """,
    )
    host = make_host(("raiser", raiser), ("algos", make_plugin("algos", ALGO_SOURCE)))
    [failure] = host.failures
    assert failure.plugin.name == "raiser"
    assert_one_line(failure.message)
    assert "plugin 'raiser'" in failure.message
    assert "register_algorithms" in failure.message
    assert "ValueError: bad config" in failure.message
    # What the failing hook registered before raising is dropped; everything else stays.
    assert "partial" not in host.names("algorithm")
    assert names_by(host, "algorithm", "algos") == {"alpha", "beta"}
    assert names_by(host, "task", "raiser") == {"raiser-task"}
    assert {"btl", "thurstone"} <= set(host.names("preference_model"))

    with pytest.raises(PluginError, match=r"plugin 'raiser' raised in register_algorithms"):
        make_host(("raiser", raiser), strict=True)


@pytest.mark.parametrize("bad_name", ["Bad Name", "UPPER", "", "-dash-first", "sp ace", 3, None])
def test_invalid_registered_name_is_a_failure(make_host, make_plugin, bad_name):
    plugin = make_plugin(
        "naming",
        f"""
        @hookimpl
        def register_algorithms(register):
            register("fine", object)
            register({bad_name!r}, object)
        """,
    )
    host = make_host(("naming", plugin))
    [failure] = host.failures
    assert failure.plugin.name == "naming"
    assert_one_line(failure.message)
    assert "plugin 'naming'" in failure.message
    assert repr(bad_name) in failure.message
    assert names_by(host, "algorithm", "naming") == set()  # nothing from that hook, not "fine"


@pytest.mark.parametrize("good_name", ["a", "9lives", "my-algo", "my_algo", "algo.v2"])
def test_valid_registered_names_are_accepted(make_host, make_plugin, good_name):
    plugin = make_plugin(
        "naming",
        f"""
        @hookimpl
        def register_algorithms(register):
            register({good_name!r}, object)
        """,
    )
    host = make_host(("naming", plugin))
    assert host.failures == []
    assert names_by(host, "algorithm", "naming") == {good_name}


# --- unknown and duplicate names ---------------------------------------------------------------


def test_unknown_name_lists_the_available_ones(make_host, make_plugin):
    host = make_host(("algos", make_plugin("algos", ALGO_SOURCE)))
    algorithms = host.names("algorithm")  # alpha, beta and whatever the core registers
    assert {"alpha", "beta"} <= set(algorithms)
    with pytest.raises(UnknownNameError) as excinfo:
        host.get("algorithm", "x")
    assert str(excinfo.value) == f"Unknown algorithm 'x'. Available: {', '.join(algorithms)}"
    assert isinstance(excinfo.value, KeyError) and isinstance(excinfo.value, HarnessError)

    with pytest.raises(UnknownNameError) as excinfo:
        host.algorithm("alpah")
    assert str(excinfo.value) == (
        f"Unknown algorithm 'alpah'. Did you mean 'alpha'? Available: {', '.join(algorithms)}"
    )

    with pytest.raises(UnknownNameError) as excinfo:
        host.preference_model("btL")
    message = str(excinfo.value)
    assert_one_line(message)
    assert message.startswith("Unknown preference model 'btL'. Did you mean 'btl'? Available: ")
    assert {"btl", "thurstone"} <= set(message.split("Available: ", 1)[1].split(", "))

    with pytest.raises(UnknownNameError, match=r"^Unknown kind of plugin object 'algo'\."):
        host.get("algo", "alpha")


def test_unknown_name_when_nothing_is_registered():
    empty = PluginHost(pm=pluggy.PluginManager("rlhf_harness"))
    with pytest.raises(UnknownNameError, match=r"^Unknown evaluator 'e'\. Available: none$"):
        empty.evaluator("e")


def test_duplicate_name_names_both_plugins(make_host, make_plugin):
    first = make_plugin("first", ALGO_SOURCE)
    second = make_plugin("second", dist_plugin_source("alpha"))
    with pytest.raises(DuplicateNameError) as excinfo:
        make_host(("first", first), ("second", second), strict=False)
    message = str(excinfo.value)
    assert_one_line(message)
    assert message.startswith("Duplicate algorithm 'alpha': ")
    # Named in load order: the one that had the name first, then the one that clashed.
    assert "registered by plugin 'first' and by plugin 'second'." in message
    assert ONLY_ENV in message  # the way out
    assert isinstance(excinfo.value, PluginError)


def test_duplicate_of_a_core_name_names_the_core(make_host, make_plugin):
    clash = make_plugin(
        "my-btl",
        """
        @hookimpl
        def register_preference_models(register):
            register("btl", object)
        """,
    )
    with pytest.raises(DuplicateNameError) as excinfo:
        make_host(("my-btl", clash))
    assert (
        "Duplicate preference model 'btl': registered by plugin 'harness.preference' "
        "(rlhf-harness core) and by plugin 'my-btl'."
    ) in str(excinfo.value)


def test_duplicate_between_distributions_names_both_distributions(dist_info_path):
    for letter in "xy":
        dist_info_path(
            f"rlhf-harness-test-dup-{letter}",
            version=f"1.{ord(letter) - ord('x')}",
            entry_points={f"dup-{letter}": f"rlhf_test_dup_{letter}_plugin"},
            modules={f"rlhf_test_dup_{letter}_plugin": dist_plugin_source("same-algo")},
        )
    with pytest.raises(DuplicateNameError) as excinfo:
        get_plugin_host(only=["dup-x", "dup-y"])
    message = str(excinfo.value)
    assert_one_line(message)
    assert "'same-algo'" in message
    assert "plugin 'dup-x' (rlhf-harness-test-dup-x 1.0)" in message
    assert "plugin 'dup-y' (rlhf-harness-test-dup-y 1.1)" in message
