"""The Markdown pages (the summary, the tables) as HTML, for `snakemake --report`.

Only the Markdown these pages are written in: headings, paragraphs, bullet lists, pipe tables,
**bold**, *italics* and `code`. The HTML is one <div> with its own style, so that it reads the same
opened alone, shown by the report's viewer, or placed in the report's opening description.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

STYLE = """<style>
.onion-page { font-family: system-ui, sans-serif; font-size: 15px; line-height: 1.45; max-width: 70rem; }
.onion-page table { border-collapse: collapse; margin: 0.5rem 0; }
.onion-page th, .onion-page td { border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: left; }
.onion-page th { background: #f2f2f2; }
.onion-page code { background: #f2f2f2; padding: 0 0.2rem; }
</style>"""


def _inline(text: str) -> str:
    """Escape, then `code` (its content left as is), **bold** and *italics*."""
    parts = text.split("`")
    out = []
    for i, part in enumerate(parts):
        part = html.escape(part, quote=False)
        if i % 2:  # inside backticks
            out.append(f"<code>{part}</code>" if i < len(parts) - 1 else "`" + part)
            continue
        part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
        out.append(re.sub(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])", r"<em>\1</em>", part))
    return "".join(out)


def _cells(row: str) -> list[str]:
    return [_inline(c.strip()) for c in row.strip().strip("|").split("|")]


def _block(lines: list[str]) -> str:
    """One block of lines between blank lines as HTML."""
    heading = re.match(r"(#{1,6}) (.*)", lines[0])
    if heading:
        level = len(heading.group(1))
        return f"<h{level}>{_inline(heading.group(2))}</h{level}>"
    if all(line.startswith("|") for line in lines):
        head, body = _cells(lines[0]), [_cells(r) for r in lines[1:] if not re.fullmatch(r"[|\s:-]+", r)]
        rows = ["<tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"]
        rows += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body]
        return "<table>\n" + "\n".join(rows) + "\n</table>"
    if lines[0].startswith("- "):
        items = []
        for line in lines:  # a line that does not start a new item continues the last one
            if line.startswith("- ") or not items:
                items.append(line.removeprefix("- "))
            else:
                items[-1] += " " + line.strip()
        return "<ul>\n" + "\n".join(f"<li>{_inline(i)}</li>" for i in items) + "\n</ul>"
    return f"<p>{_inline(' '.join(line.strip() for line in lines))}</p>"


def markdown_to_html(text: str) -> str:
    """A page: blocks split at blank lines; a heading is a block of its own."""
    blocks, current = [], []
    for line in text.splitlines():
        heading = re.match(r"#{1,6} ", line)
        if (heading or not line.strip()) and current:
            blocks.append(current)
            current = []
        if heading:
            blocks.append([line])
        elif line.strip():
            current.append(line)
    if current:
        blocks.append(current)
    body = "\n".join(_block(b) for b in blocks)
    return f'<!DOCTYPE html>\n<meta charset="utf-8">\n{STYLE}\n<div class="onion-page">\n{body}\n</div>\n'


def verdicts(text: str) -> str:
    """A summary page's verdicts as a Markdown list: each '## heading' whose next paragraph opens
    with a bold verdict; the '### part: **verdict**' headings under a '## heading' (the recurrent
    cells) as one item."""
    lines = [line for line in text.splitlines() if line.strip()]
    items, parts = [], {}
    parent = ""
    for heading, following in zip(lines, lines[1:] + [""]):
        lead = re.match(r"\*\*(.+?)\.?\*\*", following)
        part = re.fullmatch(r"### (.+): \*\*(.+?)\.?\*\*", heading)
        if heading.startswith("## "):
            parent = heading[3:]
            if lead:
                items.append(f"- **{lead.group(1)}**: {parent}")
        elif part:
            if parent not in parts:
                items.append(parent)  # its place in the list, filled in below
            parts.setdefault(parent, []).append(f"{part.group(1)} **{part.group(2)}**")
    items = [f"- {item}: " + "; ".join(parts[item]) if item in parts else item for item in items]
    return "\n".join(items) + "\n"


def _write(path, html_text: str) -> None:
    from onion.files import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(html_text, encoding="utf-8")


def run_html(md, out, verdicts_out=None) -> None:
    """The HTML rendering of one Markdown page (the table and summary rules' `html` output) and,
    for the summary, its verdicts alone (`verdicts_out`, for the report's opening page)."""
    from onion.log import log

    text = Path(md).read_text()
    _write(out, markdown_to_html(text))
    if verdicts_out:
        _write(verdicts_out, markdown_to_html(verdicts(text)))
    log(f"wrote {out}{' and ' + str(verdicts_out) if verdicts_out else ''} from {md}")
