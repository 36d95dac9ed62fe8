"""A tiny document model rendered to Markdown and to self-contained HTML."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str
    strong: bool = False


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True)
class Image:
    path: Path
    alt: str


Block = Heading | Para | Code | Table | Image


_TAG = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY = re.compile(r"&(?=#?\w+;)")


def md_text(text: str) -> str:
    """Text safe in Markdown: what a renderer would take as an HTML tag (``<script>``) or an
    entity is escaped, as the HTML report escapes it; ``ttft.p99 <= 1s`` stays readable."""
    parts = text.split("`")  # inside `code spans` a renderer shows the text as it is
    return "`".join(
        p if i % 2 else _TAG.sub("&lt;", _ENTITY.sub("&amp;", p)) for i, p in enumerate(parts)
    )


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks inside ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def to_markdown(blocks: Sequence[Block], folder: Path) -> str:
    """Markdown; images are referenced relative to ``folder``. Text is escaped (:func:`md_text`)
    so user strings (a study's description, names) cannot inject HTML."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + md_text(b.text))
        elif isinstance(b, Para):
            out.append(f"**{md_text(b.text)}**" if b.strong else md_text(b.text))
        elif isinstance(b, Code):
            fence = _fence(b.text)
            out.append(fence + "\n" + b.text.rstrip("\n") + "\n" + fence)
        elif isinstance(b, Table):
            esc = [[md_text(c).replace("|", "\\|") for c in row] for row in b.rows]
            out.append("| " + " | ".join(md_text(h).replace("|", "\\|") for h in b.headers) + " |")
            out.append("|" + "|".join("---" for _ in b.headers) + "|")
            out.extend("| " + " | ".join(row) + " |" for row in esc)
        else:
            out.append(f"![{md_text(b.alt)}]({b.path.relative_to(folder).as_posix()})")
        out.append("")
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1c1c1c;line-height:1.45}
h1{border-bottom:2px solid #333}h2{margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0;display:block;max-width:100%;
overflow-x:auto}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}td{white-space:nowrap}
th{background:#f2f2f2}td:first-child,th:first-child,.text{text-align:left}
td.text{white-space:normal;min-width:8em}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em;white-space:pre-wrap}
img{max-width:100%}.strong{font-weight:600;font-size:1.05em}
"""


def to_html(blocks: Sequence[Block], title: str) -> str:
    """One HTML file with its images embedded (data URIs), readable offline."""
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            cls = ' class="strong"' if b.strong else ""
            body.append(f"<p{cls}>{_inline(b.text)}</p>")
        elif isinstance(b, Code):
            body.append(f"<pre>{html.escape(b.text)}</pre>")
        elif isinstance(b, Table):
            width = max([len(b.headers), *(len(r) for r in b.rows)])
            cols = [[r[i] for r in b.rows if i < len(r)] for i in range(width)]
            left = ["" if _numeric(c) else ' class="text"' for c in cols]
            head = "".join(f"<th{left[i]}>{_breakable(h)}</th>" for i, h in enumerate(b.headers))
            rows = "".join(
                "<tr>"
                + "".join(f"<td{left[i]}>{_inline(c)}</td>" for i, c in enumerate(row))
                + "</tr>"
                for row in b.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        else:
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            body.append(f'<img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">')
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


_NUMBER = re.compile(r"^[<>=~+-]*\s*[\d.]")


def _numeric(cells: Iterable[str]) -> bool:
    """Whether a column holds numbers (right-aligned, never wrapped): every cell a number with
    its unit (``33.5 ms``, ``< 14.37``, ``1,234``) or empty (``-``, ``""``)."""
    return all(c in ("", "-") or _NUMBER.match(c.replace("**", "")) for c in cells)


def _breakable(header: str) -> str:
    """A header that may wrap after its underscores (``max_num_batched_tokens``), so a knob's
    column is as narrow as its values."""
    return html.escape(header).replace("_", "_<wbr>")


#: An SLO's comparison (``ttft.p99 <= 1s``) is never broken across lines.
_COMPARISON = re.compile(r" (&lt;=|&gt;=|&lt;|&gt;|==) (?=[\d.])")


def _inline(text: str) -> str:
    """Escape, then render `code` spans and **bold** (the only inline Markdown used); keep an
    SLO's comparison on one line."""
    out = _COMPARISON.sub("&nbsp;\\1&nbsp;", html.escape(text))
    parts = out.split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
