"""Figure 2 of the Phi-3 report, for any block-sparse layout: one panel per head.

A panel is the grid of query blocks (rows, top to bottom) by key blocks (columns, left to right)
of one head, coloured as in the report's figure:

    blue    local block      q - k < local_blocks             (the recent context)
    orange  vertical block   active, but not local            (one in every vert_stride)
    grey    skipped block    q >= k, not active               (never read)
    white   the future       q < k                            (causality)

    draw_layout("pattern.png", blocksparse_layout(4, 16, 2, 3), local_blocks=2, title="...")

The layout itself comes from tinyphi3.nn.blocksparse.blocksparse_layout; this module only draws.
Shape letters as in tinyphi3/config.py; NB is the number of blocks.
"""

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FUTURE, LOCAL, VERTICAL, SKIPPED = 0, 1, 2, 3
COLOURS = {FUTURE: (255, 255, 255), LOCAL: (31, 119, 180), VERTICAL: (255, 127, 14),
           SKIPPED: (205, 205, 205)}
NAMES = {LOCAL: "local block", VERTICAL: "vertical (strided) block", SKIPPED: "skipped block"}
BLACK, GREY, LINE = (0, 0, 0), (110, 110, 110), (255, 255, 255)


def block_kinds(layout, local_blocks):
    """What each block of each head is: FUTURE, LOCAL, VERTICAL or SKIPPED, int [H, NB, NB].

    A block both local and vertical counts as local (the report's figure colours it blue)."""
    NB = layout.shape[1]
    q = np.arange(NB)[:, None]                                # [NB, 1]
    k = np.arange(NB)[None, :]                                # [1, NB]
    causal = q >= k                                           # [NB, NB]
    local = causal & (q - k < local_blocks)                   # [NB, NB]
    kinds = np.full(layout.shape, SKIPPED)                    # [H, NB, NB]
    kinds[:, ~causal] = FUTURE
    kinds[layout & ~local] = VERTICAL
    kinds[layout & local] = LOCAL
    return kinds


def _font(size):
    return ImageFont.load_default(size)


def _tick_step(num_blocks):
    """Label every block up to 16 blocks, then every 2nd, 4th, 8th, ... block."""
    return 1 if num_blocks <= 16 else 2 ** math.ceil(math.log2(num_blocks / 16))


def draw_layout(path, layout, local_blocks, title, subtitle="", heads=None, labels=None):
    """Draw the panels of `heads` (default: every head) of a bool layout [H, NB, NB] to `path`
    (a PNG; its directory is created). Panels are titled "head h", and a head whose pattern
    repeats an earlier head's says so, unless `labels` gives a title per panel. Returns the path."""
    layout = np.asarray(layout, dtype=bool)
    heads = list(range(layout.shape[0])) if heads is None else list(heads)
    NB = layout.shape[1]
    kinds = block_kinds(layout, local_blocks)                 # [H, NB, NB]
    palette = np.array([COLOURS[kind] for kind in range(4)], dtype=np.uint8)   # [4, 3]
    cell = max(1, min(28, 360 // NB))                         # pixels per block
    panel = cell * NB
    pad_left, pad_top, gap_x, gap_y = 60, 150, 60, 60         # room for labels around panels
    columns = max(1, min(len(heads), 1800 // (panel + gap_x)))
    rows = -(-len(heads) // columns)
    W = max(pad_left + columns * (panel + gap_x), 980)
    H = pad_top + rows * (panel + gap_y)
    img = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(img)
    f, small = _font(15), _font(12 if cell < 16 else 13)

    d.text((W / 2, 12), title, fill=BLACK, font=_font(19), anchor="ma")
    if subtitle:
        d.text((W / 2, 42), subtitle, fill=GREY, font=f, anchor="ma")
    x = pad_left
    for kind in (LOCAL, VERTICAL, SKIPPED):                   # the legend, under the title
        d.rectangle([x, 68, x + 16, 84], fill=COLOURS[kind], outline=GREY)
        d.text((x + 24, 76), NAMES[kind], fill=BLACK, font=f, anchor="lm")
        x += 24 + d.textlength(NAMES[kind], font=f) + 30
    d.text((x, 76), "blank: future keys (k > q)", fill=GREY, font=f, anchor="lm")

    step = _tick_step(NB)
    for i, h in enumerate(heads):
        ox = pad_left + (i % columns) * (panel + gap_x)
        oy = pad_top + (i // columns) * (panel + gap_y)
        picture = palette[kinds[h]]                           # [NB, NB] -> [NB, NB, 3]
        img.paste(Image.fromarray(picture).resize((panel, panel), Image.NEAREST), (ox, oy))
        if cell >= 6:                                         # white lines between blocks
            for j in range(1, NB):
                d.line([(ox + j * cell, oy), (ox + j * cell, oy + panel)], fill=LINE)
                d.line([(ox, oy + j * cell), (ox + panel, oy + j * cell)], fill=LINE)
        d.line([(ox, oy), (ox, oy + panel), (ox + panel, oy + panel)], fill=GREY)
        for j in range(0, NB, step):                          # block numbers: keys on top,
            d.text((ox + (j + 0.5) * cell, oy - 3), str(j), fill=GREY, font=small, anchor="md")
            d.text((ox - 5, oy + (j + 0.5) * cell), str(j), fill=GREY, font=small, anchor="rm")
        d.text((ox - 9, oy - 3), "q\\k", fill=GREY, font=small, anchor="rd")   # rows q, columns k
        same = next((e for e in heads[:i] if np.array_equal(layout[e], layout[h])), None)
        label = f"head {h}" + (f" (same as head {same})" if same is not None else "")
        label = labels[i] if labels else label
        d.text((ox + panel / 2, oy - 22), label, fill=BLACK, font=f, anchor="md")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
