"""The summary and the ledger as self-contained HTML pages, which the Snakemake report shows
inline (a markdown file there is only a download)."""

from __future__ import annotations

import html

from markdown_it import MarkdownIt

STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 1.2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 1.6em; } h3, h4 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
body.numbers td { white-space: nowrap; }
th { background: #f0f0f0; position: sticky; top: 0; }
tr:nth-child(even) td { background: #fafafa; }
blockquote { border-left: 4px solid #c00; margin: 0; padding: 0.2em 1em; background: #fff3f3; }
li { margin: 0.3em 0; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def markdown_page(title: str, markdown: str, *, numbers: bool = False) -> str:
    """One HTML page of `markdown` (headings, paragraphs, lists and pipe tables), styled for reading;
    raw HTML in the text (a claim, a source) is shown as text, never run. `numbers`: table cells of
    numbers (mean ± std) never wrap."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
        f'<body class="{"numbers" if numbers else "text"}">\n{body}</body></html>\n'
    )
