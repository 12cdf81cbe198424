"""``rlhf-harness new-plugin``: the package it writes installs, conforms and passes its own tests.

"Installed" here means what pip leaves behind for the harness to find: a ``*.dist-info`` folder
with the entry points of the generated pyproject.toml, on the path next to the generated folder
(which holds the module). The generated tests run in a subprocess with that ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.devkit.scaffold import check_name, new_plugin, plugin_files
from harness.errors import ConfigError
from harness.testing import CHECKS, check_conformance

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120


def tomllib_loads(text: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads(text)


def read_toml(path: Path) -> dict:
    return tomllib_loads(path.read_text(encoding="utf-8"))


def run_main(*args: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(list(args))
        raise SystemExit(0)
    return int(info.value.code or 0)


@pytest.mark.parametrize("name", ["My_Algo", "My-Algo", "1algo", "_algo", "algo_", "algo-",
                                  "-algo", "my--algo", "my-_algo", "", "class", "my algo", "é",
                                  "my.algo"])
def test_a_name_that_is_no_lower_case_name_is_refused(name):
    with pytest.raises(ConfigError, match=r"invalid plugin name .*: use lower-case letters"):
        check_name(name)


@pytest.mark.parametrize("name", ["my-algo", "my_algo", "simpo2", "a-b-c"])
def test_hyphens_and_underscores_are_accepted(name):
    check_name(name)


def test_a_hyphenated_name_gives_the_distribution_module_and_algorithm_names():
    files = plugin_files("my-algo")
    assert sorted(files) == ["README.md", "pyproject.toml", "rlhf_harness_my_algo.py",
                             "tests/test_my_algo.py"]
    project = tomllib_loads(files["pyproject.toml"])
    assert project["project"]["name"] == "rlhf-harness-my-algo"
    assert project["project"]["entry-points"]["rlhf_harness"] == {"my-algo": "rlhf_harness_my_algo"}
    assert project["tool"]["setuptools"]["py-modules"] == ["rlhf_harness_my_algo"]
    module = files["rlhf_harness_my_algo.py"]
    assert 'name = "my-algo"' in module and "class MyAlgo(Algorithm):" in module
    assert "from rlhf_harness_my_algo import MyAlgo" in files["tests/test_my_algo.py"]


def test_offline_scaffolds_an_algorithm_that_needs_preferences():
    online, offline = plugin_files("my-algo"), plugin_files("my-algo", offline=True)
    assert 'needs = frozenset({"reward"})' in online["rlhf_harness_my_algo.py"]
    assert 'needs = frozenset({"preferences"})' in offline["rlhf_harness_my_algo.py"]
    assert "ctx.preferences" in offline["rlhf_harness_my_algo.py"]
    assert {k: v for k, v in online.items() if k != "rlhf_harness_my_algo.py"} == {
        k: v for k, v in offline.items() if k != "rlhf_harness_my_algo.py"
    }


def test_the_command_refuses_a_bad_name_in_one_line(tmp_path, capsys):
    assert run_main("new-plugin", "My-Algo", "--dir", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlhf-harness: error: invalid plugin name 'My-Algo'")
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_the_command_never_overwrites_a_folder(tmp_path, capsys):
    folder = tmp_path / "rlhf-harness-mine"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    assert run_main("new-plugin", "mine", "--dir", str(tmp_path)) == 2
    assert f"{folder} already exists: not overwriting it" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]


def test_the_command_refuses_the_name_of_an_installed_algorithm(tmp_path, capsys):
    assert run_main("new-plugin", "dpo", "--dir", str(tmp_path)) == 2
    assert "an algorithm named 'dpo' is already registered by plugin 'dpo'" in (
        capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []


def test_the_files_name_the_module_the_distribution_and_the_entry_point():
    files = plugin_files("my_algo")
    assert sorted(files) == ["README.md", "pyproject.toml", "rlhf_harness_my_algo.py",
                             "tests/test_my_algo.py"]
    assert 'name = "rlhf-harness-my-algo"' in files["pyproject.toml"]
    assert "[project.entry-points.rlhf_harness]\nmy_algo = \"rlhf_harness_my_algo\"" in (
        files["pyproject.toml"]
    )
    assert "class MyAlgo(Algorithm):" in files["rlhf_harness_my_algo.py"]
    assert "__" not in files["README.md"].replace("__init__", "")


def install(folder: Path, site: Path) -> None:
    """What pip leaves for the harness to find: a dist-info with the generated entry points."""
    project = read_toml(folder / "pyproject.toml")
    name = project["project"]["name"]
    dist_info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {project['project']['version']}\n"
    )
    entry_points = project["project"]["entry-points"]["rlhf_harness"]
    (dist_info / "entry_points.txt").write_text(
        "[rlhf_harness]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    )


@pytest.fixture(params=["online", "offline"])
def generated(request, tmp_path, capsys, monkeypatch):
    """``rlhf-harness new-plugin my-algo [--offline]``, installed as pip would (dist-info, module
    on the path)."""
    flags = ["--offline"] if request.param == "offline" else []
    assert run_main("new-plugin", "my-algo", *flags, "--dir", str(tmp_path)) == 0
    folder = tmp_path / "rlhf-harness-my-algo"
    assert f"wrote {folder}; next:" in capsys.readouterr().out
    project = read_toml(folder / "pyproject.toml")
    assert project["tool"]["setuptools"]["py-modules"] == ["rlhf_harness_my_algo"]
    site = tmp_path / "site"
    install(folder, site)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield folder, site
    sys.modules.pop("rlhf_harness_my_algo", None)
    importlib.invalidate_caches()


def test_the_generated_plugin_conforms_and_its_tests_pass(generated, subprocess_env):
    folder, site = generated
    from harness.engine.plugins import get_plugin_host

    cls = get_plugin_host().algorithm("my-algo")  # found through its entry point, hyphen and all
    check_conformance("my-algo", cls.suggested["tabular"])

    env = subprocess_env(pythonpath=os.pathsep.join([str(folder), str(site)]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=folder, capture_output=True, text=True, env=env, timeout=TIMEOUT_S, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(CHECKS) + 1} passed" in result.stdout


@pytest.mark.parametrize("offline", [False, True])
def test_the_generated_code_passes_the_harness_s_lint_rules(tmp_path, offline):
    """In its own project (where harness is a third-party import), with rlhf-harness's rules."""
    pytest.importorskip("ruff")
    folder = new_plugin("lint-me", tmp_path, offline=offline, check_registered=False)
    lint = read_toml(ROOT / "pyproject.toml")["tool"]["ruff"]
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache",
         f"--line-length={lint['line-length']}", f"--target-version={lint['target-version']}",
         f"--select={','.join(lint['lint']['select'])}",
         f"--ignore={','.join(lint['lint']['ignore'])}", "."],
        cwd=folder, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
