"""One colour per algorithm name, the same in every figure of every report.

:data:`ALGORITHM_COLOURS` fixes a colour for each shipped algorithm, so DPO is the same green
whatever the suite's order and whichever algorithms sit beside it. A configuration takes the colour
of its algorithm (a swept label ``dpo[beta=0.1]`` or a suite label such as ``dpo-adam``, given the
run's algorithm ``dpo``). An algorithm the table does not name (a third party's plugin) gets a
colour derived from a CRC-32 of its name: stable across reports, runs and machines, with no state.

Several configurations of one algorithm in one report (the points of a sweep, two labelled
variants) are shades of its colour, from dark to light: the configuration named exactly as the
algorithm first, then the others in natural order of their labels (numbers compared as numbers, so
``beta=0.04`` comes before ``beta=0.1`` and a β sweep reads dark to light). A configuration alone
in its family is drawn in the algorithm's own colour.
"""

from __future__ import annotations

import colorsys
import re
import zlib
from collections.abc import Mapping, Sequence

RGB = tuple[float, float, float]


def _hex(code: str) -> RGB:
    code = code.lstrip("#")
    r, g, b = (int(code[i : i + 2], 16) / 255 for i in (0, 2, 4))
    return (r, g, b)


ALGORITHM_COLOURS: dict[str, RGB] = {
    name: _hex(code)
    for name, code in {
        # matplotlib's tab10 for the first ten, in the order the algorithms were added
        "ppo": "#1f77b4",  # blue
        "grpo": "#ff7f0e",  # orange
        "dpo": "#2ca02c",  # green
        "ipo": "#d62728",  # red
        "rloo": "#9467bd",  # purple
        "bon": "#8c564b",  # brown
        "simpo": "#e377c2",  # pink
        "kto": "#7f7f7f",  # grey
        "orpo": "#bcbd22",  # olive
        "online-dpo": "#17becf",  # cyan
        # four more, away from those ten
        "reinforce-pp": "#1b2a6b",  # navy
        "gspo": "#f2c500",  # yellow
        "rdpo": "#6b0f3a",  # wine
        "cdpo": "#00a087",  # teal
    }.items()
}
"""The fixed colour (RGB in [0, 1]) of every shipped algorithm."""

_SWEEP = re.compile(r"\[[^\[\]]*\]$")
_NUMBER = re.compile(r"([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)")


def algorithm_of(label: str) -> str:
    """The algorithm a label names when nothing else says: the label without the ``[k=v,...]``
    suffix of a sweep point."""
    return _SWEEP.sub("", label) or label


def hashed_colour(name: str) -> RGB:
    """A colour for a name the table does not know: the hue from a CRC-32 of the name, at a
    fixed lightness and saturation (mid-tones that read on white)."""
    h = zlib.crc32(name.encode("utf-8"))
    hue = (h & 0xFFFF) / 0x10000
    lightness = 0.38 + 0.14 * ((h >> 16) & 0xFF) / 0xFF
    return colorsys.hls_to_rgb(hue, lightness, 0.62)


def algorithm_colour(algorithm: str) -> RGB:
    """The colour of ``algorithm``: the fixed one of a shipped algorithm, else the hashed one."""
    return ALGORITHM_COLOURS.get(algorithm) or hashed_colour(algorithm)


def shade(colour: RGB, lightness: float) -> RGB:
    """``colour`` with its HLS lightness set to ``lightness`` (hue and saturation kept)."""
    h, _, s = colorsys.rgb_to_hls(*colour)
    return colorsys.hls_to_rgb(h, lightness, s)


def natural_key(label: str) -> tuple[tuple[int, float, str], ...]:
    """Sort key comparing the numbers in a label as numbers (``0.04 < 0.1 < 1.0``)."""
    key: list[tuple[int, float, str]] = []
    for part in _NUMBER.split(label):
        if not part:
            continue
        try:
            key.append((0, float(part), ""))
        except ValueError:
            key.append((1, 0.0, part))
    return tuple(key)


DARKEST, LIGHTEST = 0.25, 0.72
"""The HLS lightness range of the shades of one algorithm's configurations."""


def palette(labels: Sequence[str], algorithms: Mapping[str, str] | None = None,
            ) -> dict[str, RGB]:
    """The colour of every label: its algorithm's (``algorithms[label]``, or the label without
    its sweep suffix), in shades where several labels share an algorithm (see the module)."""
    algorithms = algorithms or {}
    families: dict[str, list[str]] = {}
    for label in dict.fromkeys(labels):
        families.setdefault(algorithms.get(label) or algorithm_of(label), []).append(label)
    out: dict[str, RGB] = {}
    for algorithm, members in families.items():
        base = algorithm_colour(algorithm)
        if len(members) == 1:
            out[members[0]] = base
            continue
        ordered = sorted(members, key=lambda lab: (lab != algorithm, natural_key(lab), lab))
        for i, label in enumerate(ordered):
            out[label] = shade(base, DARKEST + (LIGHTEST - DARKEST) * i / (len(ordered) - 1))
    return out
