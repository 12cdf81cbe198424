"""The README tells the truth about what ships: every built-in plugin in its table, the lecture
whose claim the verdict tests named, and the `show` excerpt it prints what `show` prints."""

from __future__ import annotations

import re
from pathlib import Path

from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_shipped_plugin_is_in_the_algorithm_table():
    from harness.engine.plugins import get_plugin_host

    shipped = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml")
                     .exists())
    assert shipped == ["bon", "dpo", "grpo", "gspo", "ipo", "kto", "online_dpo", "orpo", "ppo",
                       "rdpo", "reinforce_pp", "rloo", "simpo"]
    host = get_plugin_host()
    registered = sorted(name for name in host.names("algorithm")
                        if host.registration("algorithm", name).plugin.name in shipped)
    table = README.split("### Algorithms", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (`[a-z-]+`(?:, `[a-z-]+`)*) \|", table, re.MULTILINE)
    listed = [name for row in rows for name in re.findall(r"`([a-z-]+)`", row)]
    assert sorted(listed) == registered


def test_the_lecture_is_named():
    assert "CMU 10-734" in README
    assert '"stability increases, computation decreases"' in README.replace("\n", " ")


def test_the_show_excerpt_is_what_show_prints(capsys):
    excerpt = README.split("$ rlhf-harness show dpo\n", 1)[1].split("```", 1)[0]
    expected = [line for line in excerpt.splitlines() if line and line != "..."]
    assert len(expected) == 3
    main(["show", "dpo"])
    printed = capsys.readouterr().out.splitlines()
    assert expected == printed[printed.index(expected[0]):][:3]
