"""The report's HTML: one page, styles inline, images by relative name, so the folder can be opened or copied."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape


from shardprep.report.previews import Card

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } tr.total td { font-weight: bold; }
pre { background: #f6f6f6; padding: 0.6em; font-size: 0.8em; overflow-x: auto; max-height: 30em; }
.card { border: 1px solid #ddd; padding: 0.6em; margin: 0.8em 0; } .card img { max-width: 100%; }
.note { color: #a40; }
"""


def page(title: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """`sections`: (id, heading, inner HTML)."""
    body = "\n".join(f'<section id="{escape(key)}"><h2>{escape(heading)}</h2>\n{inner}\n</section>'
                     for key, heading, inner in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body><h1>{escape(title)}</h1>\n{body}\n</body></html>\n")


def table(header: Sequence[str], rows: Sequence[Sequence[object]], table_id: str = "",
          row_keys: Sequence[str] | None = None, total: Sequence[object] | None = None) -> str:
    """A table; `row_keys` become each body row's `data-key` (the browser test finds shards by them)."""
    head = "".join(f"<th>{escape(str(cell))}</th>" for cell in header)
    head = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    lines = []
    for index, row in enumerate(rows):
        key = f' data-key="{escape(row_keys[index])}"' if row_keys else ""
        lines.append(f"<tr{key}>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>")
    if total is not None:
        lines.append('<tr class="total">' + "".join(f"<td>{escape(str(cell))}</td>" for cell in total) + "</tr>")
    ident = f' id="{escape(table_id)}"' if table_id else ""
    return f"<table{ident}>{head}<tbody>\n" + "\n".join(lines) + "\n</tbody></table>"


def facts(rows: Sequence[tuple[str, str]]) -> str:
    return table(("", ""), rows) if rows else ""


def preformatted(text: str) -> str:
    return f"<pre>{escape(text)}</pre>"


def paragraph(text: str, note: bool = False) -> str:
    return f'<p class="note">{escape(text)}</p>' if note else f"<p>{escape(text)}</p>"


def image(name: str, alt: str) -> str:
    return f'<img src="{escape(name)}" alt="{escape(alt)}">'


def cards(found: Sequence[Card]) -> str:
    blocks = []
    for card in found:
        inner = [f"<h3>{escape(card.title)}</h3>", *(image(name, card.title) for name in card.images),
                 facts(card.facts), *(paragraph(note, note=True) for note in card.notes)]
        blocks.append('<div class="card">' + "\n".join(inner) + "</div>")
    return "\n".join(blocks)
