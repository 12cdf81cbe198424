"""The report's figures: one colour per algorithm in every report, no empty panel, readable
compute panels, byte-identical PNGs from identical data, CSV links, and the summary on the first
screen of the HTML page."""

from __future__ import annotations

import colorsys
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib import image

from harness.engine.plugins import get_plugin_host
from harness.engine.store import RunStore
from harness.report import figures as fig
from harness.report import write_report
from harness.report.colours import ALGORITHM_COLOURS, hashed_colour, natural_key, palette
from tests.test_report import CHROMIUM, CONFIGS, _run

PPO, GRPO, DPO = CONFIGS[0], CONFIGS[1], CONFIGS[2]
REPORTS = Path(__file__).resolve().parent.parent / "reports"


# --- the palette ------------------------------------------------------------------------------


def _lab(rgb: tuple[float, float, float]) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour."""
    c = np.asarray(rgb, dtype=float)
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                  [0.0193, 0.1192, 0.9505]])
    xyz = m @ c / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_every_registered_algorithm_has_its_own_fixed_colour():
    names = get_plugin_host().names("algorithm")
    assert len(names) >= 14
    missing = sorted(set(names) - set(ALGORITHM_COLOURS))
    assert not missing, f"add a colour for {missing} to harness.report.colours"
    labs = {name: _lab(c) for name, c in ALGORITHM_COLOURS.items()}
    closest = min((float(np.linalg.norm(labs[a] - labs[b])), a, b)
                  for a in labs for b in labs if a < b)
    assert closest[0] > 20, closest  # CIE76 ΔE: clearly different at a glance


def test_a_label_has_its_algorithms_colour_whatever_else_is_in_the_report():
    dpo = ALGORITHM_COLOURS["dpo"]
    assert palette(["ppo", "grpo", "dpo"])["dpo"] == dpo
    assert palette(["dpo"])["dpo"] == dpo
    assert palette(["kto", "dpo", "simpo"])["dpo"] == dpo
    assert palette(["dpo", "ppo"])["ppo"] == ALGORITHM_COLOURS["ppo"]
    # a suite's own label takes its algorithm's colour
    assert palette(["steady", "better"], {"steady": "ppo", "better": "dpo"}) == {
        "steady": ALGORITHM_COLOURS["ppo"], "better": dpo}


def test_an_unknown_algorithm_gets_a_stable_hashed_colour():
    a = palette(["my-algo", "ppo"])["my-algo"]
    assert a == palette(["zzz", "my-algo"])["my-algo"] == hashed_colour("my-algo")
    assert a not in ALGORITHM_COLOURS.values()
    assert hashed_colour("my-algo") != hashed_colour("my-algo2")
    assert all(0 <= v <= 1 for v in a)


def test_sweep_points_are_shades_of_their_algorithm_dark_to_light():
    labels = ["dpo[beta=1.6]", "ppo", "dpo[beta=0.04]", "dpo[beta=0.1]"]
    colours = palette(labels)
    assert colours["ppo"] == ALGORITHM_COLOURS["ppo"]
    hue = colorsys.rgb_to_hls(*ALGORITHM_COLOURS["dpo"])[0]
    points = ["dpo[beta=0.04]", "dpo[beta=0.1]", "dpo[beta=1.6]"]  # natural order: 0.04 < 0.1
    hls = [colorsys.rgb_to_hls(*colours[p]) for p in points]
    assert all(h == pytest.approx(hue, abs=1e-6) for h, _, _ in hls)
    lightness = [lig for _, lig, _ in hls]
    assert lightness == sorted(lightness) and len(set(lightness)) == 3
    # a lone sweep point is the algorithm's own colour
    assert palette(["dpo[beta=0.4]", "ppo"])["dpo[beta=0.4]"] == ALGORITHM_COLOURS["dpo"]
    assert natural_key("a[x=0.04]") < natural_key("a[x=0.1]") < natural_key("a[x=1e1]")


# --- reports: colours, panels, compute ---------------------------------------------------------


def _exact_pixels(png: Path, rgb: tuple[float, float, float], tol: float = 1.5 / 255) -> int:
    pixels = image.imread(png)[..., :3]
    return int((np.abs(pixels - np.asarray(rgb)).max(axis=-1) <= tol).sum())


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory,
          ) -> tuple[Path, dict[str, plt.Figure], Path]:
    """A report of dpo listed before ppo (suite order is not colour order), on a bandit (exact
    optimum, tabular: no FLOPs) and a language-model task (no optimum, FLOPs, 1000× the
    seconds), with every figure kept for inspection: (report folder, figures, run store)."""
    root = tmp_path_factory.mktemp("drawn")
    store = RunStore(root / "runs", "two-tasks")
    for task, scale in (("bandit", 1.0), ("lm", 1000.0)):
        for cfg in (DPO, PPO):
            cfg = (*cfg[:4], cfg[4] * scale, *cfg[5:])
            for seed in (0, 3, 4):  # ppo's seeds 1 and 2 fail and diverge: left out here
                _run(store, task, cfg[0], cfg[1], seed, cfg, regret=task == "bandit",
                     flops=task == "lm")
    figures: dict[str, plt.Figure] = {}
    save = fig._save

    def keep(f: plt.Figure, path: Path) -> bool:
        figures[path.stem] = f
        return save(f, path)

    np.random.seed(1)  # the caller's generator state: it must not reach the figures
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fig, "_save", keep)
        out = write_report(store.path, root / "report")
    return out, figures, store.path


ALGORITHM_FIGURES = ("curves_step", "frontier", "overoptimisation", "regret_step",
                     "compute_time", "compute_resources", "ranking", "budget_samples",
                     "budget_flops")


def test_every_figure_draws_dpo_and_ppo_in_their_fixed_colours(drawn: Any):
    out, _, _ = drawn
    grpo = ALGORITHM_COLOURS["grpo"]  # absent: the colour an order-keyed palette gave ppo here
    for name in ALGORITHM_FIGURES:
        png = out / "figures" / f"{name}.png"
        assert _exact_pixels(png, ALGORITHM_COLOURS["dpo"]) > 20, name
        assert _exact_pixels(png, ALGORITHM_COLOURS["ppo"]) > 20, name
        assert _exact_pixels(png, grpo) == 0, name
    violins = out / "figures" / "final_gold.png"  # drawn at alpha 0.45 over white
    for alg in ("dpo", "ppo"):
        blended = tuple(0.45 * c + 0.55 for c in ALGORITHM_COLOURS[alg])
        assert _exact_pixels(violins, blended) > 100, alg


def _has_data(ax: plt.Axes) -> bool:
    return bool(ax.lines or ax.collections or ax.patches or ax.images)


def test_no_figure_has_an_empty_panel(drawn: Any):
    out, figures, _ = drawn
    assert set(ALGORITHM_FIGURES) <= set(figures)
    for name, f in figures.items():
        for ax in f.axes:
            if ax.axison:
                assert _has_data(ax), f"{name}: empty panel {ax.get_title()!r}"
            else:  # a panel with nothing to draw says why
                assert [t.get_text() for t in ax.texts if t.get_text()], name
    # the task without an exact optimum has no regret panel, and the caption says why
    assert [ax.get_title() for ax in figures["regret_step"].axes] == ["bandit"]
    md = (out / "index.md").read_text()
    assert "Not drawn for lm: no exact optimum for this task" in md
    # score against budget: J_β and the gap closure exist on the bandit only (the lm panels
    # say why), and only lm counts FLOPs, so the figure against FLOPs has lm alone
    budget = figures["budget_samples"]
    assert [ax.get_title() for ax in budget.axes if ax.get_title()] == ["bandit", "lm"]
    notes = [t.get_text() for ax in budget.axes if not ax.axison for t in ax.texts]
    assert notes == ["no exact optimum for this task"] * 2
    assert [ax.get_title() for ax in figures["budget_flops"].axes if ax.get_title()] == ["lm"]
    # the bandit is tabular: its FLOPs panel is a note, not empty axes
    notes = [ax for ax in figures["compute_resources"].axes if not ax.axison]
    assert [ax.get_title() for ax in notes] == ["bandit: training FLOPs (estimated)"]
    assert "neural policies only" in notes[0].texts[0].get_text()


def test_compute_panels_have_their_own_scale_and_labelled_axes(drawn: Any):
    _, figures, _ = drawn
    for name in ("compute_time", "compute_resources"):
        scale: dict[str, float] = {}
        for ax in figures[name].axes:
            if not ax.axison:
                continue
            assert ax.get_ylabel(), f"{name}: {ax.get_title()!r} has no y label"
            task = ax.get_title().split(":")[0]
            assert task in ("bandit", "lm"), ax.get_title()
            heights = [p.get_height() for p in ax.patches if np.isfinite(p.get_height())]
            top = max(heights)
            assert 0 < top and ax.get_ylim()[1] < 2 * top, (name, ax.get_title())
            if "seconds" in ax.get_ylabel():
                scale[task] = top
        assert scale["lm"] > 100 * scale["bandit"], (name, scale)  # yet both are readable
    units = {ax.get_ylabel() for ax in figures["compute_resources"].axes if ax.axison}
    assert {"CPU seconds per run", "FLOPs per run", "models"} <= units
    assert any("MB" in u for u in units)


# --- same data, same bytes ----------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[bytes]:
    chunks, i = [], 8
    while i < len(data):
        (length,) = np.frombuffer(data[i:i + 4], dtype=">u4")
        chunks.append(data[i + 4:i + 8])
        if chunks[-1] in (b"tEXt", b"iTXt", b"zTXt"):
            chunks.append(data[i + 8:i + 8 + int(length)])
        i += 12 + int(length)
    return chunks


def test_the_same_store_gives_byte_identical_pngs(drawn: Any, tmp_path: Path):
    a, _, store = drawn
    np.random.seed(2)  # another state of numpy's global generator than the first build's
    b = write_report(store, tmp_path / "b")
    pngs = sorted(p.name for p in (a / "figures").glob("*.png"))
    assert "final_gold.png" in pngs  # has a strip plot with jitter
    assert pngs == sorted(p.name for p in (b / "figures").glob("*.png"))
    for name in pngs:
        data = (a / "figures" / name).read_bytes()
        assert data == (b / "figures" / name).read_bytes(), name
        assert b"Software" not in b"".join(_png_chunks(data)), name  # no matplotlib version
    html = [re.sub(r"Report written in [0-9.]+ s", "", (d / "index.html").read_text())
            for d in (a, b)]
    assert html[0] == html[1]


# --- the HTML page -------------------------------------------------------------------------------


def test_csv_references_are_links(drawn: Any):
    out, _, _ = drawn
    page = (out / "index.html").read_text()
    links = re.findall(r'<a href="(tables/[^"]+\.csv)">\1</a>', page)
    assert "tables/final_metrics.csv" in links and "tables/comparisons.csv" in links
    assert all((out / link).is_file() for link in links)
    assert "CSV: tables/" not in page  # never a bare path
    md = (out / "index.md").read_text()
    assert "(tables/final_metrics.csv)" in md


PROBE = """<script>
addEventListener("load", () => {
  const head = document.getElementById("summary");
  const first = head.nextElementSibling;
  document.body.setAttribute("data-probe", JSON.stringify({
    width: innerWidth, height: innerHeight, order: [...document.querySelectorAll("h2")]
      .map((h) => h.id), top: head.getBoundingClientRect().top,
    bottom: first.getBoundingClientRect().bottom, text: first.textContent}));
});
</script>"""


def _first_screen(page: Path, tmp_path: Path) -> dict[str, Any]:
    """Where the summary lies when ``page`` opens in a 1280×800 window: the page, with a probe
    script added, laid out by headless Chromium, which writes the DOM back."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    result = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,800",
         "--virtual-time-budget=5000", "--dump-dom", probe.resolve().as_uri()],
        capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert found, result.stderr[-2000:]
    import html

    return json.loads(html.unescape(found.group(1)))


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                    "(apt-get install -y chromium)")
@pytest.mark.parametrize("which", ["synthetic", "quickstart", "frontier", "tuned"])
def test_the_summary_is_on_the_first_screen(which: str, drawn: Any, tmp_path: Path):
    if which == "synthetic":
        page = drawn[0] / "index.html"
    else:
        page = REPORTS / which / "index.html"  # the committed example reports
    probe = _first_screen(page, tmp_path)
    assert probe["width"] == 1280 and 500 <= probe["height"] <= 800, probe
    assert probe["order"][0] == "summary", probe["order"]
    assert 0 <= probe["top"] and probe["bottom"] <= probe["height"], probe
    assert "best" in probe["text"] or "learned" in probe["text"], probe["text"]
