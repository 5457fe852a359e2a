"""A tiny document model, rendered to both Markdown and HTML so the two reports hold the same content.

A report is a list of blocks (:class:`Heading`, :class:`Para`, :class:`Bullets`, :class:`Table`, :class:`Image`):
:func:`to_markdown` writes ``report.md`` (and ``summary.md``, the comparison's Markdown), :func:`to_html` writes
``report.html``, one self-contained page. Inline markup is limited to Markdown's `code` spans and **bold**.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Heading:
    """A heading of ``level`` 1 to 6 (``#`` marks in Markdown, ``<hN>`` in HTML)."""

    text: str
    level: int = 2


@dataclass
class Para:
    """A paragraph of text with inline markup."""

    text: str


@dataclass
class Bullets:
    """A bulleted list; each item is text with inline markup."""

    items: list[str]


@dataclass
class Table:
    """A table of text cells; ``numeric`` columns are right-aligned (and in HTML get no inline markup)."""

    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    row_classes: list[str] = field(default_factory=list)  # the setting of each row, for the HTML colour marker


@dataclass
class Image:
    """A PNG figure with a caption: Markdown links ``rel_path``, HTML embeds ``data`` as a data URI."""

    rel_path: str  # relative to the run directory, e.g. plots/metrics.png
    caption: str
    data: bytes = b""


Block = Heading | Para | Bullets | Table | Image


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    """Render blocks as GitHub-flavoured Markdown."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {it}" for it in b.items))
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.headers) + " |"]
            lines.append("| " + " | ".join("---:" if n else "---" for n in b.numeric) + " |")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Image):
            out.append(f"![{b.caption}]({b.rel_path})\n\n*{b.caption}*")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    # Markdown's `code` spans and **bold** are the only inline markup the report uses
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;
color:#1d1d1d;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.88em}
th,td{border-bottom:1px solid #e3e3e3;padding:.25em .65em;vertical-align:top}
th{background:#f4f4f4;text-align:left;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr:hover td{background:#fafafa}
tr.federated td:first-child{border-left:5px solid #1f6fb4}
tr.centralized td:first-child{border-left:5px solid #e66101}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em;margin-top:.3em}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
"""


def to_html(blocks: Sequence[Block], title: str) -> str:
    """Render blocks as one self-contained HTML page: inline CSS, images as base64 data URIs, no external resource."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline_html(it)}</li>" for it in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(
                f'<th class="num">{html.escape(h)}</th>' if n else f"<th>{html.escape(h)}</th>"
                for h, n in zip(b.headers, b.numeric)
            )
            body = []
            for i, row in enumerate(b.rows):
                cls = b.row_classes[i] if i < len(b.row_classes) and b.row_classes[i] else ""
                cells = "".join(
                    f'<td class="num">{html.escape(c)}</td>' if n else f"<td>{_inline_html(c)}</td>"
                    for c, n in zip(row, b.numeric)
                )
                body.append(f'<tr class="{html.escape(cls)}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        elif isinstance(b, Image):
            uri = "data:image/png;base64," + base64.b64encode(b.data).decode("ascii")
            cap = html.escape(b.caption)
            parts.append(f'<figure><img src="{uri}" alt="{cap}"><figcaption>{cap}</figcaption></figure>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
