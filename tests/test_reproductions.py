"""The reproduction suites (``suites/reproductions/``) and their analysis script.

Every suite file there must pass ``check_suite`` (keys, types, plugins, configs); the fitting
code of ``suites/reproductions/analyse.py`` must recover known coefficients of Gao et al.'s
functional forms, R_bon(d) = d(α − β d) and R_RL(d) = d(α − β log d), from synthetic data.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.engine.plugins import get_plugin_host
from harness.suite import check_suite, load_suite

ROOT = Path(__file__).resolve().parents[1]
SUITES = sorted((ROOT / "suites" / "reproductions").glob("*.yaml"))


def _analyse():
    spec = importlib.util.spec_from_file_location(
        "reproductions_analyse", ROOT / "suites" / "reproductions" / "analyse.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_there_are_reproduction_suites() -> None:
    assert len(SUITES) >= 4


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_suite_is_valid(path: Path) -> None:
    suite = load_suite(path)
    runs = check_suite(suite, path, get_plugin_host())
    assert runs
    assert suite.name == path.stem  # reports land in reports/reproductions/<file stem>/


@pytest.mark.parametrize("form,alpha,beta", [("bon", 0.8, 0.15), ("rl", 0.5, 0.2)])
def test_fit_recovers_known_coefficients(form: str, alpha: float, beta: float) -> None:
    analyse = _analyse()
    d = np.linspace(0.05, 4.0, 40)
    gain = analyse.FORMS[form](d, alpha, beta)
    fit = analyse.fit_form(form, d, gain)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert fit.alpha.value == pytest.approx(alpha, rel=1e-5)
    assert fit.beta.value == pytest.approx(beta, rel=1e-5)
    assert fit.n == 40


def test_fit_with_noise_covers_truth() -> None:
    analyse = _analyse()
    rng = np.random.default_rng(0)
    d = np.repeat(np.linspace(0.1, 3.0, 30), 4)
    gain = analyse.bon_form(d, 0.6, 0.1) + rng.normal(0, 0.01, d.size)
    fit = analyse.fit_form("bon", d, gain)
    assert fit.alpha.low < 0.6 < fit.alpha.high
    assert fit.beta.low < 0.1 < fit.beta.high
    assert fit.r2 > 0.99


def test_rl_form_is_zero_at_zero() -> None:
    analyse = _analyse()
    out = analyse.rl_form(np.array([0.0, 1.0, math.e]), 1.0, 1.0)
    assert out.tolist() == pytest.approx([0.0, 1.0, 0.0])


def test_fit_needs_three_points() -> None:
    analyse = _analyse()
    with pytest.raises(ValueError, match="at least 3"):
        analyse.fit_form("bon", [0.1, 0.2], [0.0, 0.1])
