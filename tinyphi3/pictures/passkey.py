"""Pictures of the long-context evaluation (tinyphi3.evaluation.passkey): the passkey grid of
each model as a heat map, side by side, and the perplexity by position as lines.

    passkey_heatmaps("passkey.png", {"mini": grid, "mini-4k": grid}, title)
    position_plot("position.png", {"mini": buckets, "mini-4k": buckets}, title)

A heat map's rows are the depths of the key (0% = at the start of the filler, 100% = at the end),
its columns the lengths in tokens; a cell is white at 0% right and dark blue at 100%, with the
number written in it, and grey with "past" where the length is past the model's context.
"""

import numpy as np
from PIL import Image, ImageDraw

from tinyphi3.pictures.charts import BLACK, GREY, WHITE, _font, _save, line_plot

PAST = (215, 215, 215)
DARK = (8, 48, 107)          # the dark blue of charts.heatmaps


def passkey_heatmaps(name, grids: dict, title: str, cell=(64, 40)):
    """One annotated heat map per model (grids: {model name: passkey_grid result})."""
    first = next(iter(grids.values()))
    depths, lengths = first["depths"], first["lengths"]
    cw, ch = cell
    left, top, gap = 90, 100, 50
    pw, ph = cw * len(lengths), ch * len(depths)
    f, small = _font(14), _font(13)
    note = ("rows: depth of the key in the filler; cells: % right (white 0, dark blue 100); "
            "grey: past the context")
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wide = max(measure.textlength(title, font=_font(18)), measure.textlength(note, font=small))
    W, H = max(left + len(grids) * (pw + gap), int(wide) + 40), top + ph + 90   # text fits
    img = Image.new("RGB", (W, H), WHITE)
    d = ImageDraw.Draw(img)
    left += (W - left - len(grids) * (pw + gap)) // 2            # the panels centred
    for p, (label, grid) in enumerate(grids.items()):
        ox = left + p * (pw + gap)
        for r, row in enumerate(grid["accuracy"]):
            for c, acc in enumerate(row):
                box = [ox + c * cw, top + r * ch, ox + (c + 1) * cw, top + (r + 1) * ch]
                if acc is None:
                    d.rectangle(box, fill=PAST, outline=WHITE)
                    text, ink = "past", GREY
                else:
                    color = tuple(int(255 - acc * (255 - v)) for v in DARK)
                    d.rectangle(box, fill=color, outline=(225, 225, 225))
                    text, ink = f"{100 * acc:.0f}", WHITE if acc > 0.5 else BLACK
                d.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), text, fill=ink,
                       font=small, anchor="mm")
        for c, length in enumerate(grid["lengths"]):
            d.text((ox + (c + 0.5) * cw, top + ph + 6), str(length), fill=BLACK, font=small,
                   anchor="ma")
        if p == 0:
            for r, depth in enumerate(grid["depths"]):
                d.text((ox - 8, top + (r + 0.5) * ch), f"{100 * depth:.0f}%", fill=BLACK,
                       font=small, anchor="rm")
        context = f"context {grid['context']}" + (", run past it" if grid["past_context"] else "")
        d.text((ox + pw / 2, top - 30), label, fill=BLACK, font=f, anchor="md")
        d.text((ox + pw / 2, top - 10), context, fill=GREY, font=small, anchor="md")
    d.text((W / 2, 12), title, fill=BLACK, font=_font(18), anchor="ma")
    d.text((W / 2, top + ph + 30), "length of the document, tokens", fill=BLACK, font=f,
           anchor="ma")
    d.text((W / 2, H - 24), note, fill=GREY, font=small, anchor="ma")
    d.text((left - 82, top - 30), "depth", fill=BLACK, font=f)
    return _save(img, name)


def position_plot(name, results: dict, title: str, legend: str = "best"):
    """Perplexity by position bucket, one line per model (results: {model name:
    position_perplexity result}); buckets past a model's context are left out of its line."""
    buckets = [b["bucket"] for b in next(iter(results.values()))]
    series = {}
    for label, rows in results.items():
        xs = [j for j, b in enumerate(rows) if b["perplexity"] is not None]
        if xs:
            series[label] = (np.array(xs), np.array([rows[j]["perplexity"] for j in xs]))
    ticks = [f"{_short(lo)}-{_short(hi)}" for lo, hi in buckets]     # "2-4K": fits the edge
    return line_plot(name, series, title, "position of the predicted token (bucket, tokens)",
                     "perplexity", log_y=True, xticks=ticks, legend=legend)


def _short(tokens):
    """512 -> '0.5K', 4096 -> '4K' (multiples of 512 count in K = 1024), others as they are."""
    return f"{tokens / 1024:g}K" if tokens and tokens % 512 == 0 else str(tokens)
