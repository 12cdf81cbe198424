"""Analyses the generic report lacks, for the reproduction suites of ``suites/reproductions/``.

Reads only the run store (``<root>/<suite>/``: each run's spec.json, summary.json and
metrics.parquet) and writes, next to a suite's report (``<out>/<suite>/``), a
``reproduction.md`` with its tables, PNG figures and CSV files:

- ``gao`` — gold and proxy reward against d = √KL(π‖π_ref) for best-of-n, PPO and GRPO, and
  Gao et al.'s fits on the gold-reward gain R(d) = r*(π) − r*(π_ref): R_bon(d) = d(α − β d),
  R_RL(d) = d(α − β log d) (scipy's ``curve_fit``), fitted per run (one seed's curve) and on the
  points of all seeds pooled. The runs are the independent units: the evaluation points of one
  run share its r̂, its rollouts and its π, so the coefficients' intervals are Student-t
  intervals over the per-seed fits, not curve_fit's covariance of the pooled points (which
  treats every point as independent and is far too narrow). Written to
  ``gao_overoptimisation/``.
- ``tajwar`` — final gold reward of PPO, GRPO, RLOO and DPO with the reward peak far from and near
  π_ref's mode, and each on-policy method's paired (same seed, same data) gap to DPO in gold
  reward and in regret by the sign-flip permutation test (its interval and p-value, as in the
  reports), the p-values Holm-adjusted over the table. Written to
  ``tajwar_peak_far/`` (it covers both suites).
- ``azar`` — final KL(π‖π_ref) of DPO per β and IPO per τ, with near-deterministic and noisy
  annotators. Written to ``azar_deterministic/`` (both suites).
- ``misspec`` — the 2 × 2 table (labels BTL/Thurstone × fit BTL/Thurstone) of reward-model
  accuracy and downstream gold reward of PPO and DPO. Written to
  ``misspec_btl_labels_btl_fit/`` (all four suites).

Every interval is a 95% Student-t interval over seeds (:func:`harness.report.stats.t_interval`)
unless said otherwise. Usage::

    .venv/bin/python suites/reproductions/analyse.py [--root runs] [--out reports/reproductions]
        [gao tajwar azar misspec]

**One script, over 600 lines, on purpose.** The four analyses share the loading and
formatting helpers, and the script is run by its path (and loaded so by
``tests/test_reproductions.py``), outside any package that sibling modules could be imported
from.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.engine.store import RunStore
from harness.report.stats import SKEW_LEVEL, Estimate, holm, paired_sign_flip, t_interval

# --- fitting (Gao et al. 2022's functional forms) ----------------------------------------------


def bon_form(d: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """R_bon(d) = d (α − β d)."""
    return d * (alpha - beta * d)


def rl_form(d: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """R_RL(d) = d (α − β log d), with R_RL(0) = 0."""
    d = np.asarray(d, dtype=float)
    safe = np.where(d > 0, d, 1.0)
    return np.where(d > 0, d * (alpha - beta * np.log(safe)), 0.0)


FORMS: dict[str, Callable[..., np.ndarray]] = {"bon": bon_form, "rl": rl_form}


@dataclass(frozen=True)
class Fit:
    """A fitted form: coefficients (with curve_fit's ±1.96 s.e., which hold only for
    independent points), R², number of points."""

    form: str
    alpha: Estimate
    beta: Estimate
    r2: float
    n: int

    def predict(self, d: np.ndarray) -> np.ndarray:
        return FORMS[self.form](np.asarray(d, dtype=float), self.alpha.value, self.beta.value)


def fit_form(form: str, d: Sequence[float], gain: Sequence[float]) -> Fit:
    """Least-squares fit of ``FORMS[form]`` to (d, R) points (scipy.optimize.curve_fit)."""
    from scipy.optimize import curve_fit

    x, y = np.asarray(d, dtype=float), np.asarray(gain, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3:
        raise ValueError(f"need at least 3 points to fit, got {len(x)}")
    popt, pcov = curve_fit(FORMS[form], x, y, p0=(1.0, 0.1), maxfev=20000)
    resid = y - FORMS[form](x, *popt)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else math.nan
    se = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else [math.nan] * 2
    est = [Estimate(float(p), float(p - 1.96 * s), float(p + 1.96 * s))
           for p, s in zip(popt, se, strict=True)]
    return Fit(form, est[0], est[1], r2, len(x))


# --- reading the store ---------------------------------------------------------------------------


def load_runs(root: str | Path, suite: str) -> list[dict[str, Any]]:
    """Finished runs of a suite: spec, summary, status and eval metrics (wide, one row per step)."""
    runs = []
    for rec in RunStore(root, suite).records():
        if rec.state not in ("done", "diverged") or rec.summary is None:
            continue
        m = rec.metrics()
        ev = m[m["source"] == "eval"].pivot_table(
            index=["step", "samples"], columns="metric", values="value"
        ).reset_index().sort_values("step")
        runs.append({"run_id": rec.run_id, "spec": rec.spec, "summary": rec.summary,
                     "status": rec.state, "eval": ev})
    if not runs:
        raise FileNotFoundError(f"no finished runs of suite '{suite}' under {root}")
    return runs


def _algo_key(spec: dict[str, Any]) -> str:
    return str(spec["algorithm"])


def _fmt(e: Estimate, digits: int = 3) -> str:
    return e.format(digits)


def _count(counts: Any) -> str:
    """The number of seeds behind a table's rows: ``30``, or ``29–30`` where rows differ."""
    values = sorted({int(c) for c in counts})
    return str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"


SKEW_NOTE = f"scipy.stats.skewtest p < {SKEW_LEVEL:g}, where the test's level does not hold"


def _gap(row: dict[str, Any], mean: str, prefix: str) -> str:
    """A paired gap as the table prints it: its mean, the sign-flip interval and the
    Holm-adjusted p-value, or, where the differences are skewed, the mean and "undecidable" (no
    interval: its coverage does not hold there, as in the reports)."""
    p = f"p_Holm {row[prefix + '_p_holm']:.2g}"
    if row[prefix + "_skewed"]:
        return f"{row[mean]:.3g} (skewed: undecidable; {p})"
    return f"{_fmt(Estimate(row[mean], row[prefix + '_low'], row[prefix + '_high']))} ({p})"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- 1. Gao et al.: over-optimisation ----------------------------------------------------------


def analyse_gao(root: Path, out: Path, suite: str = "gao_overoptimisation") -> str:
    runs = load_runs(root, suite)
    points = []  # one row per (run, eval step): d, gold gain, proxy gain
    for r in runs:
        ev = r["eval"]
        base = ev.iloc[0]  # step 0: π_ref itself, on the same eval prompts and seed
        for _, row in ev.iterrows():
            if row["step"] == 0 and r["spec"]["algorithm"] != "bon":
                continue
            kl = max(float(row["kl_ref"]), 0.0)
            points.append({
                "algorithm": _algo_key(r["spec"]), "seed": r["spec"]["seed"],
                "n": r["spec"]["algorithm_config"].get("n"), "step": int(row["step"]),
                "samples": row["samples"], "kl": kl, "d": math.sqrt(kl),
                "gold": row["gold_reward"], "proxy": row["proxy_reward"],
                "gold_gain": row["gold_reward"] - base["gold_reward"],
                "proxy_gain": row["proxy_reward"] - base["proxy_reward"],
            })
    pts = pd.DataFrame(points)
    # BoN: the policy after its one step (step 0 is π_ref, the same for every n).
    bon = pts[(pts.algorithm == "bon") & (pts.step == 1)].sort_values(["n", "seed"])
    pts = pd.concat([bon, pts[pts.algorithm != "bon"]], ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    pts.to_csv(out / "reproduction_points.csv", index=False)

    fits: dict[str, Fit] = {}
    seed_fits: dict[str, Fit] = {}
    over_seeds: dict[str, tuple[Estimate, Estimate, int]] = {}
    fit_rows = []
    for algo, form in (("bon", "bon"), ("ppo", "rl"), ("grpo", "rl")):
        sub = pts[pts.algorithm == algo]
        if len(sub) < 3:
            continue
        fits[algo] = fit_form(form, sub["d"], sub["gold_gain"])
        per_seed = []
        for seed, g in sub.groupby("seed"):
            if len(g) >= 3:
                seed_fits[f"{algo} seed {seed}"] = fit = fit_form(form, g["d"], g["gold_gain"])
                per_seed.append(fit)
        over_seeds[algo] = (t_interval([f.alpha.value for f in per_seed]),
                            t_interval([f.beta.value for f in per_seed]), len(per_seed))
    for name, fit in [*fits.items(), *seed_fits.items()]:
        row = {"algorithm": name, "form": fit.form, "alpha": fit.alpha.value,
               "beta": fit.beta.value, "r2": fit.r2, "points": fit.n}
        if name in over_seeds:  # pooled: the interval is over the per-seed fits
            alpha, beta, k = over_seeds[name]
            row.update(alpha_seed_mean=alpha.value, alpha_low=alpha.low, alpha_high=alpha.high,
                       beta_seed_mean=beta.value, beta_low=beta.low, beta_high=beta.high,
                       seeds=k)
        fit_rows.append(row)
    pd.DataFrame(fit_rows).to_csv(out / "reproduction_fits.csv", index=False)

    # Rise-then-fall: per algorithm, the seed-mean curve (BoN over n, RL over steps).
    shape_rows, shape_csv = [], []
    for algo in ("bon", "ppo", "grpo"):
        sub = pts[pts.algorithm == algo]
        if sub.empty:
            continue
        key = "n" if algo == "bon" else "step"
        curve = sub.groupby(key).agg(
            d=("d", "mean"), gold=("gold_gain", "mean"), proxy=("proxy_gain", "mean")
        ).reset_index()
        peak = curve.loc[curve["gold"].idxmax()]
        last = curve.iloc[-1]
        at_peak = sub[sub[key] == peak[key]]["gold_gain"]
        at_last = sub[sub[key] == last[key]]["gold_gain"]
        drop = t_interval(at_peak.to_numpy() - at_last.to_numpy()) if len(at_peak) == len(
            at_last) else Estimate(math.nan)
        proxy_last = t_interval(sub[sub[key] == last[key]]["proxy_gain"])
        proxy_peak = t_interval(sub[sub[key] == peak[key]]["proxy_gain"])
        shape_rows.append([
            algo, f"{key}={int(peak[key])}", f"{peak['d']:.3g}", _fmt(t_interval(at_peak)),
            _fmt(proxy_peak), f"{key}={int(last[key])}", f"{last['d']:.3g}",
            _fmt(t_interval(at_last)), _fmt(proxy_last), _fmt(drop),
        ])
        shape_csv.append({"algorithm": algo, "peak_at": f"{key}={int(peak[key])}",
                          "peak_d": peak["d"], "gold_gain_peak": peak["gold"],
                          "proxy_gain_peak": proxy_peak.value, "last_at": f"{key}={int(last[key])}",
                          "last_d": last["d"], "gold_gain_last": last["gold"],
                          "proxy_gain_last": proxy_last.value, "drop": drop.value,
                          "drop_low": drop.low, "drop_high": drop.high})
    pd.DataFrame(shape_csv).to_csv(out / "reproduction_shape.csv", index=False)
    seed_shape_rows = []
    for (algo, seed), g in pts.groupby(["algorithm", "seed"]):
        g = g.sort_values("n" if algo == "bon" else "step")
        peak, last = g.loc[g["gold_gain"].idxmax()], g.iloc[-1]
        seed_shape_rows.append([
            algo, seed, f"{peak['d']:.3g}", f"{peak['gold_gain']:.3g}", f"{peak['proxy_gain']:.3g}",
            f"{last['d']:.3g}", f"{last['gold_gain']:.3g}", f"{last['proxy_gain']:.3g}",
            f"{g['proxy_gain'].max():.3g}"])

    bon_rows = []
    for n, g in bon.groupby("n"):
        bon_rows.append([int(n), f"{g['d'].mean():.3g}", _fmt(t_interval(g["gold_gain"])),
                         _fmt(t_interval(g["proxy_gain"]))])

    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for ax, algo in zip(axes, ("bon", "ppo", "grpo"), strict=True):
        sub = pts[pts.algorithm == algo]
        for seed, g in sub.groupby("seed"):
            g = g.sort_values("d" if algo == "bon" else "step")
            ax.plot(g["d"], g["gold_gain"], "o-", ms=3, color="C0", alpha=0.6,
                    label="gold r* gain" if seed == sub.seed.min() else None)
            ax.plot(g["d"], g["proxy_gain"], "s--", ms=3, color="C1", alpha=0.6,
                    label="proxy r̂ gain" if seed == sub.seed.min() else None)
        if algo in fits and len(sub):
            grid = np.linspace(0, sub["d"].max(), 200)
            f = fits[algo]
            ax.plot(grid, f.predict(grid), "k-", lw=1.5,
                    label=f"fit α={f.alpha.value:.3g}, β={f.beta.value:.3g}, R²={f.r2:.2f}")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(algo)
        ax.set_xlabel("d = √KL(π‖π_ref)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("reward gain over π_ref")
    fig.tight_layout()
    fig.savefig(out / "reproduction.png", dpi=120)
    plt.close(fig)

    fit_table = _table(
        ["algorithm", "form", "α", "β", "R²", "points",
         "α over seeds [95% CI]", "β over seeds [95% CI]"],
        [[a + ("" if " " in a else " (seeds pooled)"), FORMS_TEXT[f.form],
          f"{f.alpha.value:.3g}", f"{f.beta.value:.3g}", f"{f.r2:.3f}", f.n,
          _fmt(over_seeds[a][0]) if a in over_seeds else "",
          _fmt(over_seeds[a][1]) if a in over_seeds else ""]
         for a, f in [*fits.items(), *seed_fits.items()]],
    )
    shape_table = _table(
        ["algorithm", "gold peak at", "d there", "gold gain there", "proxy gain there",
         "last point", "d there", "gold gain there", "proxy gain there",
         "gold drop peak→last (paired)"], shape_rows,
    )
    bon_table = _table(["n", "d", "gold gain", "proxy gain"], bon_rows)
    seeds = sorted({r["spec"]["seed"] for r in runs})
    rm = _rm_summary(runs)
    text = f"""# Reproduction: reward over-optimisation (Gao et al. 2022)

Suite `{suite}`, {len(runs)} runs, seeds {seeds}. Reward model: {rm}.
Gains are relative to π_ref (each run's step-0 evaluation, same eval prompts and seed); d =
√KL(π‖π_ref) (BoN: the analytic log n − (n−1)/n; PPO/GRPO: the sampled estimate, clipped at 0).
Intervals: 95% Student-t over seeds. Fits: one per seed (its own curve), and one on the points of
all seeds pooled (the curve drawn); the coefficients' intervals are Student-t intervals over the
per-seed fits ("over seeds"), because the points of one run are not independent: they share its
r̂, its rollouts and its policy.

![gold and proxy gain against d](reproduction.png)

## Fits on the gold-reward gain

{fit_table}

## Does gold rise then fall while proxy keeps rising?

Seed-mean curves: where the gold gain peaks, and the last point (largest n / final step).

{shape_table}

Per seed (each seed has its own preference data and r̂; single runs, no intervals):

{_table(["algorithm", "seed", "d at gold peak", "gold gain there", "proxy gain there",
         "last d", "last gold gain", "last proxy gain", "max proxy gain"], seed_shape_rows)}

## Best-of-n by n

{bon_table}

Files: `reproduction_points.csv` (every point), `reproduction_fits.csv`, `reproduction_shape.csv`.
"""
    (out / "reproduction.md").write_text(text)
    return text


FORMS_TEXT = {"bon": "d(α − β d)", "rl": "d(α − β log d)"}


def _rm_summary(runs: list[dict[str, Any]]) -> str:
    acc = [r["summary"]["reward_model"]["heldout_accuracy"] for r in _one_per_seed(runs)
           if r["summary"].get("reward_model")]
    gold = [r["summary"]["reward_model"]["gold_heldout_accuracy"] for r in _one_per_seed(runs)
            if r["summary"].get("reward_model")]
    if not acc:
        return "none recorded"
    per_seed = ", ".join(f"{a:.4g}" for a in acc)
    per_seed_gold = ", ".join(f"{a:.4g}" for a in gold)
    return (f"held-out accuracy on the annotator's labels {_fmt(t_interval(acc))} (per seed: "
            f"{per_seed}), on gold preferences {_fmt(t_interval(gold))} (per seed: "
            f"{per_seed_gold})")


def _one_per_seed(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[int, dict[str, Any]] = {}
    for r in runs:
        if r["summary"].get("reward_model"):
            seen.setdefault(r["spec"]["seed"], r)
    return [seen[k] for k in sorted(seen)]


# --- 2. Tajwar et al.: on-policy vs offline ----------------------------------------------------


def _final(r: dict[str, Any], metric: str) -> float:
    v = r["summary"]["final"].get(metric)
    return float(v) if v is not None else math.nan


def analyse_tajwar(root: Path, out: Path) -> str:
    rows, csv = [], []
    finals: dict[str, pd.DataFrame] = {}
    for kind in ("far", "near"):
        runs = load_runs(root, f"tajwar_peak_{kind}")
        df = pd.DataFrame([{"algorithm": _algo_key(r["spec"]), "seed": r["spec"]["seed"],
                            "gold": _final(r, "gold_reward"), "regret": _final(r, "regret"),
                            "kl": _final(r, "kl_ref"),
                            "ref_gold": float(r["eval"].iloc[0]["gold_reward"])} for r in runs])
        finals[kind] = df
        dpo = df[df.algorithm == "dpo"].set_index("seed")
        for algo in ("ppo", "grpo", "rloo", "dpo"):
            g = df[df.algorithm == algo].set_index("seed")
            if algo != "dpo":
                gap = paired_sign_flip(g["gold"], dpo["gold"].reindex(g.index))
                rgap = paired_sign_flip(g["regret"], dpo["regret"].reindex(g.index))
            else:
                gap = rgap = paired_sign_flip([], [])
            est, reg, kl = t_interval(g["gold"]), t_interval(g["regret"]), t_interval(g["kl"])
            csv.append({"reward": f"peak_{kind}", "algorithm": algo, "gold": est.value,
                        "gold_low": est.low, "gold_high": est.high,
                        "regret": reg.value, "regret_low": reg.low, "regret_high": reg.high,
                        "kl": kl.value, "kl_low": kl.low, "kl_high": kl.high,
                        "gap_to_dpo": gap.mean_diff, "gap_low": gap.low, "gap_high": gap.high,
                        "gap_p": gap.p_value, "gap_skewed": gap.skewed,
                        "regret_gap_to_dpo": rgap.mean_diff, "regret_gap_skewed": rgap.skewed,
                        "regret_gap_low": rgap.low, "regret_gap_high": rgap.high,
                        "regret_gap_p": rgap.p_value, "seeds": len(g)})
    table = pd.DataFrame(csv)
    # one family: every paired test of the table (gold and regret gaps, both rewards)
    tests = [*table["gap_p"], *table["regret_gap_p"]]
    adjusted = holm(tests)
    table["gap_p_holm"] = adjusted[: len(table)]
    table["regret_gap_p_holm"] = adjusted[len(table):]
    csv = table.to_dict("records")
    for r in csv:
        dpo_row = r["algorithm"] == "dpo"
        rows.append([
            r["reward"], r["algorithm"],
            _fmt(Estimate(r["gold"], r["gold_low"], r["gold_high"])),
            _fmt(Estimate(r["regret"], r["regret_low"], r["regret_high"])),
            _fmt(Estimate(r["kl"], r["kl_low"], r["kl_high"])),
            "—" if dpo_row else _gap(r, "gap_to_dpo", "gap"),
            "—" if dpo_row else _gap(r, "regret_gap_to_dpo", "regret_gap")])
    # How much the on-policy advantage shrinks: gap(far) − gap(near), per seed, per algorithm.
    shrink_rows = []
    for algo in ("ppo", "grpo", "rloo"):
        gaps = {}
        for kind, df in finals.items():
            d = df[df.algorithm == "dpo"].set_index("seed")["gold"]
            g = df[df.algorithm == algo].set_index("seed")["gold"]
            gaps[kind] = g - d.reindex(g.index)
        diff = (gaps["far"] - gaps["near"].reindex(gaps["far"].index)).to_numpy()
        shrink_rows.append([algo, _fmt(t_interval(diff))])
    ref_rows = [[f"peak_{k}", _fmt(t_interval(df.drop_duplicates("seed")["ref_gold"]))]
                for k, df in finals.items()]
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(csv).to_csv(out / "reproduction.csv", index=False)

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    algos = ["ppo", "grpo", "rloo", "dpo"]
    for j, kind in enumerate(("far", "near")):
        sub = pd.DataFrame(csv)
        sub = sub[sub.reward == f"peak_{kind}"].set_index("algorithm").loc[algos]
        x = np.arange(len(algos)) + (j - 0.5) * 0.38
        err = np.vstack([sub["gold"] - sub["gold_low"], sub["gold_high"] - sub["gold"]])
        ax.bar(x, sub["gold"], 0.36, yerr=err, capsize=3, label=f"peak_{kind}")
    ax.set_xticks(np.arange(len(algos)), algos)
    ax.set_ylabel(f"final gold reward (95% CI, {_count(table['seeds'])} seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "reproduction.png", dpi=120)
    plt.close(fig)

    text = f"""# Reproduction: on-policy vs offline on Tajwar et al.'s bandit

Suites `tajwar_peak_far` and `tajwar_peak_near` (each 4 algorithms ×
{_count(table['seeds'])} seeds). Final gold reward E_π r* (exact), regret J_β(π*_β) − J_β(π)
at β = 0.1 and KL(π‖π_ref): 95% Student-t intervals over seeds. The gap to DPO is paired by
seed (same preference data, same r̂): its interval and p-value are the sign-flip permutation
test's (`harness.report.stats.paired_sign_flip`, as in the reports), the p-values
Holm-adjusted over the 12 gaps of the table; a gap whose differences are skewed
({SKEW_NOTE}) is marked undecidable.

![final gold reward](reproduction.png)

{_table(["reward", "algorithm", "final gold reward", "regret", "KL(π‖π_ref)",
         "gold − DPO's (paired)", "regret − DPO's (paired)"], rows)}

π_ref's own gold reward: {'; '.join(f'{a}: {b}' for a, b in ref_rows)}.

How much larger each on-policy method's advantage over DPO is with the peak far than near
(gap_far − gap_near, paired by seed):

{_table(["algorithm", "gap(far) − gap(near)"], shrink_rows)}

File: `reproduction.csv`.
"""
    (out / "reproduction.md").write_text(text)
    return text


# --- 3. Azar et al.: DPO vs IPO ----------------------------------------------------------------


def analyse_azar(root: Path, out: Path) -> str:
    csv, rows = [], []
    for kind in ("deterministic", "noisy"):
        runs = load_runs(root, f"azar_{kind}")
        scale = runs[0]["spec"]["preferences"]["scale"]
        df = pd.DataFrame([{
            "algorithm": _algo_key(r["spec"]), "seed": r["spec"]["seed"],
            "reg": r["spec"]["sweep_point"].get("beta", r["spec"]["sweep_point"].get("tau")),
            "kl": _final(r, "kl_ref"), "gold": _final(r, "gold_reward"), "status": r["status"],
            "kl_half": _at_half(r["eval"], "kl_ref"),
        } for r in runs])
        for (algo, reg), g in df.groupby(["algorithm", "reg"]):
            kl, gold = t_interval(g["kl"]), t_interval(g["gold"])
            growth = t_interval((g["kl"] - g["kl_half"]).to_numpy())
            csv.append({"annotator_scale": scale, "algorithm": algo, "beta_or_tau": reg,
                        "kl": kl.value, "kl_low": kl.low, "kl_high": kl.high,
                        "gold": gold.value, "gold_low": gold.low, "gold_high": gold.high,
                        "kl_growth_second_half": growth.value, "kl_growth_low": growth.low,
                        "kl_growth_high": growth.high,
                        "seeds": len(g), "diverged": int((g["status"] == "diverged").sum())})
            rows.append([scale, algo, reg, _fmt(kl), _fmt(growth), _fmt(gold), len(g)])
    table = pd.DataFrame(csv)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "reproduction.csv", index=False)

    # KL ratio across the β (τ) grid: how much the regulariser moves the KL, per setting.
    ratio_rows = []
    for (scale, algo), g in table.groupby(["annotator_scale", "algorithm"]):
        g = g.sort_values("beta_or_tau")
        ratio_rows.append([scale, algo, f"{g['kl'].iloc[0]:.3g}", f"{g['kl'].iloc[-1]:.3g}",
                           f"{g['kl'].iloc[0] / g['kl'].iloc[-1]:.3g}"])

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, scale in zip(axes, sorted(table.annotator_scale.unique()), strict=True):
        for algo, c in (("dpo", "C0"), ("ipo", "C1")):
            g = table[(table.annotator_scale == scale) & (table.algorithm == algo)]
            g = g.sort_values("beta_or_tau")
            err = np.vstack([g["kl"] - g["kl_low"], g["kl_high"] - g["kl"]])
            ax.errorbar(g["beta_or_tau"], g["kl"], yerr=np.clip(err, 0, None), fmt="o-",
                        color=c, capsize=3, label=f"{algo} ({'β' if algo == 'dpo' else 'τ'})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"annotator scale {scale}")
        ax.set_xlabel("β (DPO) / τ (IPO)")
        ax.legend()
    axes[0].set_ylabel(f"final KL(π‖π_ref) (95% CI, {_count(table['seeds'])} seeds)")
    fig.tight_layout()
    fig.savefig(out / "reproduction.png", dpi=120)
    plt.close(fig)

    text = f"""# Reproduction: DPO vs IPO on near-deterministic preferences (Azar et al. 2023)

Suites `azar_deterministic` and `azar_noisy`: the same bandit and 2000 pairs per seed, labelled by
a BTL annotator at scale 0.01 (near-deterministic) or 1.0 (noisy); DPO sweeps β and IPO τ over
the same grid; final exact KL(π‖π_ref) and gold reward, 95% Student-t intervals over
{_count(table['seeds'])} seeds.

![final KL against β / τ](reproduction.png)

{_table(["annotator scale", "algorithm", "β / τ", "final KL(π‖π_ref)",
         "KL growth over the second half of training (paired)", "final gold reward",
         "seeds"], rows)}

How much the regulariser controls the KL: KL at the smallest over KL at the largest β (τ).

{_table(["annotator scale", "algorithm", "KL at 0.1", "KL at 3", "ratio"], ratio_rows)}

File: `reproduction.csv`.
"""
    (out / "reproduction.md").write_text(text)
    return text


def _at_half(ev: pd.DataFrame, metric: str) -> float:
    """``metric`` at the evaluation nearest to half of the last evaluated step."""
    half = ev["step"].max() / 2
    return float(ev.iloc[(ev["step"] - half).abs().argmin()][metric])


# --- 4. Preference-model misspecification ------------------------------------------------------


def analyse_misspec(root: Path, out: Path) -> str:
    csv, cells = [], {}
    by_seed: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    for labels in ("btl", "thurstone"):
        for fit in ("btl", "thurstone"):
            suite = f"misspec_{labels}_labels_{fit}_fit"
            runs = load_runs(root, suite)
            per_seed = {r["spec"]["seed"]: r["summary"]["reward_model"] for r in runs
                        if r["summary"].get("reward_model")}
            acc = t_interval([v["heldout_accuracy"] for v in per_seed.values()])
            gacc = t_interval([v["gold_heldout_accuracy"] for v in per_seed.values()])
            ppo = t_interval([_final(r, "gold_reward") for r in runs
                              if r["spec"]["algorithm"] == "ppo"])
            ppo_regret = t_interval([_final(r, "regret") for r in runs
                                     if r["spec"]["algorithm"] == "ppo"])
            dpo = t_interval([_final(r, "gold_reward") for r in runs
                              if r["spec"]["algorithm"] == "dpo"])
            cells[(labels, fit)] = (acc, gacc, ppo, ppo_regret, dpo)
            by_seed[(labels, fit)] = {
                "acc": {k: v["heldout_accuracy"] for k, v in per_seed.items()},
                "gacc": {k: v["gold_heldout_accuracy"] for k, v in per_seed.items()},
                "ppo": {r["spec"]["seed"]: _final(r, "gold_reward") for r in runs
                        if r["spec"]["algorithm"] == "ppo"},
                "regret": {r["spec"]["seed"]: _final(r, "regret") for r in runs
                           if r["spec"]["algorithm"] == "ppo"},
            }
            csv.append({"labels": labels, "fit": fit, "rm_heldout_accuracy": acc.value,
                        "rm_heldout_accuracy_low": acc.low, "rm_heldout_accuracy_high": acc.high,
                        "rm_gold_accuracy": gacc.value, "rm_gold_accuracy_low": gacc.low,
                        "rm_gold_accuracy_high": gacc.high, "ppo_gold": ppo.value,
                        "ppo_gold_low": ppo.low, "ppo_gold_high": ppo.high,
                        "ppo_regret": ppo_regret.value, "dpo_gold": dpo.value,
                        "dpo_gold_low": dpo.low, "dpo_gold_high": dpo.high})
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(csv).to_csv(out / "reproduction.csv", index=False)

    # Fit Thurstone − fit BTL, paired by seed (same labels, same task draw): the fit's effect.
    paired = []
    for labels in ("btl", "thurstone"):
        a, b = by_seed[(labels, "thurstone")], by_seed[(labels, "btl")]
        row = [labels]
        for key in ("acc", "gacc", "ppo", "regret"):
            seeds = sorted(set(a[key]) & set(b[key]))
            row.append(_fmt(t_interval([a[key][k] - b[key][k] for k in seeds])))
        paired.append(row)

    def grid(i: int) -> str:
        return _table(["labels \\ fit", "fit BTL", "fit Thurstone"], [
            [lab, _fmt(cells[(lab, "btl")][i]), _fmt(cells[(lab, "thurstone")][i])]
            for lab in ("btl", "thurstone")])

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (i, name) in zip(axes, ((0, "r̂ held-out accuracy"), (2, "PPO final gold reward")),
                             strict=True):
        labels_ = [f"{a}/{b}" for a, b in cells]
        vals = [cells[k][i] for k in cells]
        ax.bar(labels_, [v.value for v in vals],
               yerr=np.clip(np.vstack([[v.value - v.low for v in vals],
                                       [v.high - v.value for v in vals]]), 0, None), capsize=3)
        ax.set_title(name + " (labels/fit)")
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(out / "reproduction.png", dpi=120)
    plt.close(fig)

    seeds = _count(len(v["ppo"]) for v in by_seed.values())
    text = f"""# Reproduction: preference-model misspecification (BTL vs Thurstone)

Four suites `misspec_<labels>_labels_<fit>_fit`: 2000 pairs per seed labelled by a BTL or a
Thurstone annotator (scale 0.5), r̂ fitted by maximum likelihood under BTL or Thurstone (scale 0.5);
PPO on r̂, DPO on the pairs. 95% Student-t intervals over {seeds} seeds (the same {seeds} label
sets in both columns of a row).

![accuracy and PPO gold reward](reproduction.png)

## r̂ held-out accuracy (on the annotator's noisy labels)

{grid(0)}

## r̂ accuracy on gold preferences (held-out pairs, the sign of Δr*)

{grid(1)}

## PPO final gold reward

{grid(2)}

## PPO final regret (β = 0.1)

{grid(3)}

## The fit's effect, paired by seed: fit Thurstone − fit BTL, same labels

{_table(["labels", "Δ held-out accuracy", "Δ gold accuracy", "Δ PPO gold reward",
         "Δ PPO regret"], paired)}

## DPO final gold reward (DPO uses no r̂: both columns of a row are the same runs' settings)

{grid(4)}

File: `reproduction.csv`.
"""
    (out / "reproduction.md").write_text(text)
    return text


ANALYSES: dict[str, tuple[Callable[[Path, Path], str], str]] = {
    "gao": (analyse_gao, "gao_overoptimisation"),
    "tajwar": (analyse_tajwar, "tajwar_peak_far"),
    "azar": (analyse_azar, "azar_deterministic"),
    "misspec": (analyse_misspec, "misspec_btl_labels_btl_fit"),
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="*", help=f"Among {', '.join(ANALYSES)} (default: all).")
    parser.add_argument("--root", default="runs", help="Run store folder.")
    parser.add_argument("--out", default="reports/reproductions", help="Reports folder.")
    args = parser.parse_args(argv)
    unknown = [w for w in args.which if w not in ANALYSES]
    if unknown:
        parser.error(f"unknown analysis {unknown[0]!r}; choose from {', '.join(ANALYSES)}")
    for name in args.which or list(ANALYSES):
        fn, folder = ANALYSES[name]
        target = Path(args.out) / folder
        fn(Path(args.root), target)
        print(f"{name}: {target / 'reproduction.md'}")
        print(json.dumps(sorted(p.name for p in target.glob('reproduction*'))))


if __name__ == "__main__":
    main()
