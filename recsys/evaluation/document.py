"""A minimal document model rendered to both Markdown and self-contained HTML.

The report is built once as a list of blocks and written twice, so report.md and
report.html always say the same thing.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Bold:
    text: str


Cell = str | Bold


@dataclass
class Document:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("bullets", items))

    def table(self, header: list[str], rows: list[list[Cell]]) -> None:
        self.blocks.append(("table", header, rows))

    def image(self, path: Path, alt: str) -> None:
        self.blocks.append(("image", path, alt))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))


def to_markdown(doc: Document, root: Path) -> str:
    """Markdown; images are linked relative to ``root`` (the report directory)."""
    lines = [f"# {doc.title}", ""]
    for kind, *args in doc.blocks:
        if kind == "heading":
            lines += [f"{'#' * args[0]} {args[1]}", ""]
        elif kind == "paragraph":
            lines += [args[0], ""]
        elif kind == "bullets":
            lines += [f"- {item}" for item in args[0]] + [""]
        elif kind == "table":
            lines += [*_markdown_table(*args), ""]
        elif kind == "image":
            lines += [f"![{args[1]}]({Path(args[0]).relative_to(root).as_posix()})", ""]
        elif kind == "code":
            lines += ["```", args[0], "```", ""]
    return "\n".join(lines)


def _markdown_table(header: list[str], rows: list[list[Cell]]) -> list[str]:
    def cell(value: Cell) -> str:
        return f"**{value.text}**" if isinstance(value, Bold) else str(value)

    align = ["---"] + [
        "---:" if all(_numeric(row[c]) for row in rows) else "---" for c in range(1, len(header))
    ]
    lines = [f"| {' | '.join(header)} |", f"| {' | '.join(align)} |"]
    return lines + [f"| {' | '.join(cell(v) for v in row)} |" for row in rows]


def _numeric(value: Cell) -> bool:
    text = value.text if isinstance(value, Bold) else str(value)
    try:
        float(text.replace(",", ""))
    except ValueError:
        return text in ("–", "n/a")  # a figure missing, or not available (cold-item ties)
    return True


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def to_html(doc: Document) -> str:
    """One self-contained HTML page: the figures are embedded as data: URIs."""
    esc = html.escape
    body = [f"<h1>{esc(doc.title)}</h1>"]
    for kind, *args in doc.blocks:
        if kind == "heading":
            body.append(f"<h{args[0]}>{esc(args[1])}</h{args[0]}>")
        elif kind == "paragraph":
            body.append(f"<p>{_inline(args[0])}</p>")
        elif kind == "bullets":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in args[0]) + "</ul>")
        elif kind == "table":
            body.append(_html_table(*args))
        elif kind == "image":
            data = base64.b64encode(Path(args[0]).read_bytes()).decode("ascii")
            body.append(f'<p><img alt="{esc(args[1])}" src="data:image/png;base64,{data}"></p>')
        elif kind == "code":
            body.append(f"<pre>{esc(args[0])}</pre>")
    head = f'<meta charset="utf-8"><title>{esc(doc.title)}</title><style>{STYLE}</style>'
    return (
        f"<!doctype html>\n<html><head>{head}</head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _inline(text: str) -> str:
    """Escaped text with Markdown's **bold** and `code` spans as HTML."""
    out, parts = [], html.escape(text).split("**")
    for position, part in enumerate(parts):
        code = part.split("`")
        part = "".join(f"<code>{c}</code>" if n % 2 else c for n, c in enumerate(code))
        out.append(f"<b>{part}</b>" if position % 2 else part)
    return "".join(out)


def _html_table(header: list[str], rows: list[list[Cell]]) -> str:
    def cell(value: Cell) -> str:
        if isinstance(value, Bold):
            return f"<td><b>{html.escape(value.text)}</b></td>"
        return f"<td>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
