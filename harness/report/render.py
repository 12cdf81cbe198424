"""A small document model rendered twice: GitHub Markdown and one self-contained HTML page.

A report is a list of blocks — :class:`Heading`, :class:`Text`, :class:`Table`, :class:`Figure`.
Text is a template whose ``{placeholders}`` are filled from data; the renderers escape every
filled-in value (names come from plugins and suite files) and the template itself, so nothing a
plugin names can inject markup: HTML gets ``html.escape``, Markdown gets HTML-escaping of ``<``,
``>`` and ``&`` plus backslash-escapes of the characters Markdown gives meaning to.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}|#!~])")


def md_escape(text: Any) -> str:
    """``text`` as literal Markdown (GitHub flavour): no markup, no raw HTML, one line."""
    s = re.sub(r"\s+", " ", str(text))
    s = html.escape(s, quote=False)
    return _MD_SPECIAL.sub(r"\\\1", s)


def html_escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


@dataclass
class Heading:
    text: str
    level: int = 2
    anchor: str = ""


@dataclass
class Text:
    """A paragraph: ``template.format(**values)``, with every value escaped by the renderer."""

    template: str
    values: dict[str, Any] = field(default_factory=dict)

    def render(self, escape: Any) -> str:
        safe = {k: escape(v) for k, v in self.values.items()}
        parts = re.split(r"(\{[a-zA-Z_][a-zA-Z0-9_]*\})", self.template)
        out = []
        for part in parts:
            if part.startswith("{") and part.endswith("}") and part[1:-1] in safe:
                out.append(safe[part[1:-1]])
            else:
                out.append(escape(part))
        return "".join(out)


@dataclass
class Table:
    """A table of already formatted cells; ``csv`` names the file holding its numbers."""

    frame: pd.DataFrame
    caption: str = ""
    csv: str | None = None


@dataclass
class Figure:
    path: Path
    """The PNG file, inside the report folder."""
    caption: str


Block = Heading | Text | Table | Figure


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def to_markdown(blocks: list[Block], root: Path) -> str:
    """GitHub Markdown; figures and CSV files are linked relative to ``root``."""
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + md_escape(b.text), ""]
        elif isinstance(b, Text):
            lines += [b.render(md_escape), ""]
        elif isinstance(b, Table):
            if b.caption:
                lines += [f"*{md_escape(b.caption)}*", ""]
            lines += _md_table(b.frame)
            if b.csv:
                lines += ["", f"[{md_escape(b.csv)}]({b.csv})"]
            lines.append("")
        elif isinstance(b, Figure):
            rel = b.path.relative_to(root).as_posix()
            lines += [f"![{md_escape(b.caption)}]({rel})", "", f"*{md_escape(b.caption)}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def _md_table(frame: pd.DataFrame) -> list[str]:
    if frame.empty:
        return ["(no rows)"]
    head = "| " + " | ".join(md_escape(c) for c in frame.columns) + " |"
    rule = "|" + "|".join(" --- " for _ in frame.columns) + "|"
    body = [
        "| " + " | ".join(md_escape(v) for v in row) + " |"
        for row in frame.astype(str).itertuples(index=False)
    ]
    return [head, rule, *body]


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; color: #1f2328; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfcfd; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption, .caption { color: #57606a; font-size: 13px; font-style: italic; }
nav { background: #f6f8fa; padding: .5em 1em; border: 1px solid #d0d7de; }
nav a { margin-right: 1em; }
.supported { background: #dafbe1 !important; }
.not-supported { background: #ffebe9 !important; }
.inconclusive { background: #fff8c5 !important; }
"""


def to_html(blocks: list[Block], title: str) -> str:
    """One page with inline CSS and figures embedded as base64 PNG: no external resource. The
    only links out of the page are to the report's own CSV files (``tables/NAME.csv``, relative,
    so they follow the folder wherever it is copied)."""
    body: list[str] = []
    toc = [b for b in blocks if isinstance(b, Heading) and b.level == 2]
    for b in blocks:
        if isinstance(b, Heading):
            ident = _slug(b.anchor or b.text)
            body.append(f'<h{b.level} id="{ident}">{html_escape(b.text)}</h{b.level}>')
            if b.level == 1 and toc:
                links = " ".join(
                    f'<a href="#{_slug(h.anchor or h.text)}">{html_escape(h.text)}</a>'
                    for h in toc
                )
                body.append(f"<nav>{links}</nav>")
        elif isinstance(b, Text):
            body.append(f"<p>{b.render(html_escape)}</p>")
        elif isinstance(b, Table):
            if b.caption:
                body.append(f'<p class="caption">{html_escape(b.caption)}</p>')
            body.append(_html_table(b.frame))
            if b.csv:
                body.append(f'<p class="caption">CSV: <a href="{html_escape(b.csv)}">'
                            f"{html_escape(b.csv)}</a></p>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{html_escape(b.caption)}" '
                f'src="data:image/png;base64,{data}"><figcaption>{html_escape(b.caption)}'
                f"</figcaption></figure>"
            )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html_escape(title)}</title>\n"
        '<link rel="icon" href="data:,">\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


_MARK_CLASS = {"supported": "supported", "not supported": "not-supported",
               "inconclusive": "inconclusive"}


def _html_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p>(no rows)</p>"
    head = "".join(f"<th>{html_escape(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.astype(str).itertuples(index=False):
        cells = []
        for v in row:
            cls = _MARK_CLASS.get(v)
            attr = f' class="{cls}"' if cls else ""
            cells.append(f"<td{attr}>{html_escape(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
