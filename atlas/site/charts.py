"""Small inline SVG charts for the pages (no TensorFlow, no JavaScript needed)."""

from __future__ import annotations

from html import escape

CELL = 12
LABEL_WIDTH = 170
FONT = 10


def _colour(share: float) -> str:
    """matplotlib's viridis at ``share`` (0 to 1) as ``#rrggbb``."""
    from atlas.render.draw import _lut

    r, g, b = (int(v) for v in _lut("viridis")[min(255, max(0, round(share * 255)))])
    return f"#{r:02x}{g:02x}{b:02x}"


def confusion_svg(metrics, titles: dict[str, str], word: str = "breed") -> str:
    """The breed confusion matrix as an SVG: rows the true breed, columns the predicted one.

    A cell's colour is its share of the row (the true breed's photos), viridis; every
    non-empty cell carries its count, and a tooltip naming both breeds.

    Args:
        metrics: :class:`~atlas.analysis.metrics.PetsMetrics` with a ``matrix``.
        titles: breed key -> display name.
        word: what the dataset calls a class (``breed`` for the pets).
    """
    names = [titles.get(key, key.replace("_", " ")) for key in metrics.matrix_breeds]
    size = len(names) * CELL
    width, height = LABEL_WIDTH + size + 4, LABEL_WIDTH + size + 4
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="confusion" viewBox="0 0 {width} '
        f'{height}" width="{width}" height="{height}" role="img" aria-label="Confusion matrix:'
        f' rows are the true {word}, columns the predicted {word}">',
        f'<g font-size="{FONT}" font-family="sans-serif" fill="currentColor">',
    ]
    for i, name in enumerate(names):
        y = LABEL_WIDTH + i * CELL + CELL - 2
        parts.append(f'<text x="{LABEL_WIDTH - 4}" y="{y}" text-anchor="end">{escape(name)}</text>')
        x = LABEL_WIDTH + i * CELL + CELL - 3
        parts.append(
            f'<text transform="translate({x},{LABEL_WIDTH - 4}) rotate(-90)">{escape(name)}</text>'
        )
    parts.append("</g>")
    parts.append(
        f'<rect x="{LABEL_WIDTH}" y="{LABEL_WIDTH}" width="{size}" height="{size}" '
        f'fill="{_colour(0)}"/>'
    )
    for i, row in enumerate(metrics.matrix):
        total = sum(row)
        for j, count in enumerate(row):
            if not count:
                continue
            x, y = LABEL_WIDTH + j * CELL, LABEL_WIDTH + i * CELL
            tip = f"{names[i]} → {names[j]}: {count} of {total} photos"
            stroke = ' stroke="#fff" stroke-width="1"' if i == j else ""
            parts.append(
                f'<rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" '
                f'fill="{_colour(count / total)}"{stroke}><title>{escape(tip)}</title>'
                "</rect>"
            )
    parts.append("</svg>")
    return "".join(parts)
