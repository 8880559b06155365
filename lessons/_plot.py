"""The lessons draw with tinyphi3.pictures.charts; this name keeps `import _plot` short in the lessons."""
from tinyphi3.pictures.charts import bar_chart, grouped_bars, heatmaps, line_plot  # noqa: F401
from tinyphi3.pictures.charts import token_strip  # noqa: F401
from tinyphi3.pictures.charts import block_diagram, probability_bars  # noqa: F401
from tinyphi3.pictures.charts import cell_rows  # noqa: F401

# ---- pictures of images: patches, crops, attention over patches, token layouts (lessons 20, 21)
import numpy as np
from PIL import Image, ImageDraw

from tinyphi3.pictures.charts import BLACK, GREY, WHITE, _font, _save

RED = (214, 39, 40)
PANEL = (236, 236, 236)                     # behind an image, so that white padding shows
KIND_FILLS = [(120, 170, 220), (245, 170, 100), (140, 200, 120), (180, 150, 210),
              (230, 130, 130), (240, 215, 110), (120, 205, 200), (200, 200, 200),
              (90, 90, 90), (255, 255, 255)]


def _zoomed(image, scale):
    """uint8 [H, W, 3] -> a Pillow image `scale` times larger (nearest: pixels stay squares)."""
    img = Image.fromarray(np.asarray(image, np.uint8))
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BOX)


def _outlined_text(d, xy, text, font, anchor="la"):
    """White text with a black outline: readable over any picture."""
    d.text(xy, text, fill=WHITE, font=font, anchor=anchor, stroke_width=2, stroke_fill=BLACK)


def patch_sequence(name, image, tiles, title, note="", zoom=7, tile=34, per_row=13):
    """An image cut into patches, and the sequence the transformer reads.

    Left: image (uint8 [S, S, 3]) enlarged `zoom` times, with its patch grid and each patch's
    index. Right: the class token, then the tiles (uint8 [n, P, P, 3], in sequence order),
    `per_row` to a row, each with its position in the sequence under it."""
    image = np.asarray(image, np.uint8)
    n, P = len(tiles), tiles.shape[1]
    G = image.shape[0] // P
    f, small = _font(15), _font(12)
    big = _zoomed(image, zoom)
    rows = -(-(n + 1) // per_row)
    pitch_x, pitch_y = tile + 8, tile + 22
    left_w = big.width + 60
    W = left_w + per_row * pitch_x + 40
    H = max(big.height + 120, 110 + rows * pitch_y + 40) + (26 if note else 0)
    img = Image.new("RGB", (W, H), WHITE)
    d = ImageDraw.Draw(img)
    ox, oy = 30, 80
    img.paste(big, (ox, oy))
    cell = P * zoom
    for k in range(G + 1):                                        # the patch grid
        d.line([(ox + k * cell, oy), (ox + k * cell, oy + big.height)], fill=BLACK, width=2)
        d.line([(ox, oy + k * cell), (ox + big.width, oy + k * cell)], fill=BLACK, width=2)
    for r in range(G):
        for c in range(G):
            _outlined_text(d, (ox + c * cell + 4, oy + r * cell + 3), str(G * r + c), small)
    d.text((ox + big.width / 2, oy - 8), f"the image: {G} x {G} patches of {P} x {P} pixels",
           fill=BLACK, font=f, anchor="md")
    sx, sy = left_w, 80
    d.text((sx, sy - 8), "the sequence: class token, then the patches row by row",
           fill=BLACK, font=f, anchor="ld")
    for i in range(n + 1):
        x, y = sx + (i % per_row) * pitch_x, sy + (i // per_row) * pitch_y
        if i == 0:
            d.rectangle([x, y, x + tile, y + tile], fill=(253, 191, 111), outline=BLACK)
            d.text((x + tile / 2, y + tile / 2), "CLS", fill=BLACK, font=small, anchor="mm")
        else:
            img.paste(_zoomed(tiles[i - 1], tile / P), (x, y))
            d.rectangle([x, y, x + tile, y + tile], outline=GREY)
        d.text((x + tile / 2, y + tile + 3), str(i), fill=GREY, font=small, anchor="ma")
    d.text((W / 2, 12), title, fill=BLACK, font=_font(18), anchor="ma")
    if note:
        d.text((W / 2, H - 24), note, fill=GREY, font=small, anchor="ma")
    return _save(img, name)


def attention_over_patches(name, image, panels, grid, title, note="", zoom=6, footers=None):
    """Where one query looks: per panel, the image (uint8 [S, S, 3], greyed) under a blue veil
    whose strength is each patch's attention weight (its share of the panel's largest), the
    query's patch outlined in red. panels: [(panel title, weights over the G*G patches, query
    patch index or None for the class token)]; grid: G; footers: a line under each panel (by
    default its largest weight against the uniform one)."""
    image = np.asarray(image, np.uint8)
    grey = image.mean(axis=2, keepdims=True).repeat(3, axis=2) * 0.5 + 127   # [S, S, 3]
    base = _zoomed(grey.astype(np.uint8), zoom)
    cell = base.width / grid
    f, small = _font(15), _font(13)
    pw, gap = base.width, 40
    W, H = 30 + len(panels) * (pw + gap), base.height + 150 + (24 if note else 0)
    img = Image.new("RGB", (W, H), WHITE)
    d = ImageDraw.Draw(img)
    for p, (label, weights, query) in enumerate(panels):
        weights = np.asarray(weights, float).reshape(grid, grid)
        ox, oy = 30 + p * (pw + gap), 90
        veil = np.zeros((grid, grid, 4), np.uint8)                          # RGBA per patch
        veil[..., :3] = (8, 48, 160)
        veil[..., 3] = np.round(220 * weights / weights.max()).astype(np.uint8)
        veil = Image.fromarray(veil, "RGBA").resize(base.size, Image.Resampling.NEAREST)
        panel = base.convert("RGBA")
        panel.alpha_composite(veil)
        img.paste(panel.convert("RGB"), (ox, oy))
        d.rectangle([ox, oy, ox + pw, oy + base.height], outline=BLACK)
        if query is not None:
            r, c = divmod(query, grid)
            d.rectangle([ox + c * cell, oy + r * cell, ox + (c + 1) * cell, oy + (r + 1) * cell],
                        outline=RED, width=3)
        d.multiline_text((ox + pw / 2, oy - 8), label, fill=BLACK, font=f, anchor="md",
                         align="center")
        footer = (footers[p] if footers else
                  f"largest weight {weights.max():.3f}, uniform {1 / grid ** 2:.3f}")
        d.text((ox + pw / 2, oy + base.height + 8), footer, fill=GREY, font=small, anchor="ma")
    d.text((W / 2, 12), title, fill=BLACK, font=_font(18), anchor="ma")
    if note:
        d.text((W / 2, H - 24), note, fill=GREY, font=small, anchor="ma")
    return _save(img, name)


def crop_grids(name, panels, title, note="", box=(400, 280), per_row=3):
    """Images with the lines of their crops: panels [(panel title, uint8 [H, W, 3], crop side
    in pixels, or None for no lines)], each shrunk into `box` on a grey ground (so that white
    padding shows), `per_row` panels to a row; titles may hold several lines."""
    bw, bh = box
    f, small = _font(15), _font(13)
    lines = max(len(label.splitlines()) for label, _, _ in panels)
    head = 20 * lines + 10
    rows = -(-len(panels) // per_row)
    W = 20 + min(per_row, len(panels)) * (bw + 30)
    H = 60 + rows * (head + bh + 20) + (26 if note else 0)
    img = Image.new("RGB", (W, H), WHITE)
    d = ImageDraw.Draw(img)
    for p, (label, image, crop) in enumerate(panels):
        image = np.asarray(image, np.uint8)
        ox = 20 + (p % per_row) * (bw + 30)
        oy = 50 + (p // per_row) * (head + bh + 20) + head
        d.rectangle([ox, oy, ox + bw, oy + bh], fill=PANEL)
        scale = min(bw / image.shape[1], bh / image.shape[0])
        shown = _zoomed(image, scale)
        x0, y0 = ox + (bw - shown.width) // 2, oy + (bh - shown.height) // 2
        img.paste(shown, (x0, y0))
        if crop:
            for k in range(image.shape[1] // crop + 1):
                x = x0 + min(k * crop * scale, shown.width - 1)
                d.line([(x, y0), (x, y0 + shown.height - 1)], fill=RED, width=2)
            for k in range(image.shape[0] // crop + 1):
                y = y0 + min(k * crop * scale, shown.height - 1)
                d.line([(x0, y), (x0 + shown.width - 1, y)], fill=RED, width=2)
        else:
            d.rectangle([x0, y0, x0 + shown.width - 1, y0 + shown.height - 1], outline=GREY)
        d.multiline_text((ox + bw / 2, oy - 6), label, fill=BLACK, font=f, anchor="md",
                         align="center")
    d.text((W / 2, 12), title, fill=BLACK, font=_font(18), anchor="ma")
    if note:
        d.text((W / 2, H - 24), note, fill=GREY, font=small, anchor="ma")
    return _save(img, name)


def cell_grids(name, panels, title, legend, note="", cell=(56, 42)):
    """Grids of labelled cells side by side: where each vector of a sequence comes from.

    panels: [(panel title, cells, block)]: cells a list of rows, each a list of (text, kind)
    or None (no cell); text may hold two lines; kind indexes legend (the names of the kinds,
    drawn under the title) and picks the fill; block (rows, columns) draws a thick line every
    that many rows and columns (crop borders), or None."""
    cw, ch = cell
    f, small = _font(15), _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    sizes = [(max(len(r) for r in cells) * cw, len(cells) * ch) for _, cells, _ in panels]
    widths = [max(w, probe.textlength(label, font=f) + 10) for (w, _), (label, _, _)
              in zip(sizes, panels)]
    panels_w = 30 + sum(w + 40 for w in widths)
    W = int(max(panels_w, probe.textlength(title, font=_font(18)) + 80,
                probe.textlength(note, font=small) + 80))
    x, legend_lines = 20, 1                                 # the legend, wrapped to the width
    for label in legend:
        step = 22 + probe.textlength(label, font=f) + 26
        if x + step > W - 20 and x > 20:
            x, legend_lines = 20, legend_lines + 1
        x += step
    top = 50 + 24 * legend_lines + 40
    H = top + max(h for _, h in sizes) + 20 + (26 if note else 0)
    img = Image.new("RGB", (W, H), WHITE)
    d = ImageDraw.Draw(img)
    ox = 30 + (W - panels_w) / 2
    for (label, cells, block), (pw, ph), width in zip(panels, sizes, widths):
        x0 = ox + (width - pw) / 2
        for r, row in enumerate(cells):
            for c, entry in enumerate(row):
                if entry is None:
                    continue
                text, kind = entry
                box = [x0 + c * cw, top + r * ch, x0 + (c + 1) * cw, top + (r + 1) * ch]
                d.rectangle(box, fill=KIND_FILLS[kind % len(KIND_FILLS)], outline=GREY)
                ink = WHITE if KIND_FILLS[kind % len(KIND_FILLS)] == (90, 90, 90) else BLACK
                d.multiline_text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), text, fill=ink,
                                 font=small, anchor="mm", align="center", spacing=1)
        if block:
            bh_, bw_ = block
            for r in range(0, len(cells) + 1, bh_):
                d.line([(x0, top + r * ch), (x0 + bw_ * cw * (max(map(len, cells)) // bw_),
                                             top + r * ch)], fill=BLACK, width=3)
            for c in range(0, max(map(len, cells)) // bw_ * bw_ + 1, bw_):
                d.line([(x0 + c * cw, top), (x0 + c * cw, top + len(cells) * ch)], fill=BLACK,
                       width=3)
        d.text((ox + width / 2, top - 10), label, fill=BLACK, font=f, anchor="md")
        ox += width + 40
    x, y = 20, 50
    for k, label in enumerate(legend):                      # the legend, under the title
        step = 22 + d.textlength(label, font=f) + 26
        if x + step > W - 20 and x > 20:
            x, y = 20, y + 24
        d.rectangle([x, y - 8, x + 16, y + 8], fill=KIND_FILLS[k % len(KIND_FILLS)],
                    outline=GREY)
        d.text((x + 22, y), label, fill=BLACK, font=f, anchor="lm")
        x += step
    d.text((W / 2, 12), title, fill=BLACK, font=_font(18), anchor="ma")
    if note:
        d.text((W / 2, H - 24), note, fill=GREY, font=small, anchor="ma")
    return _save(img, name)


# ---- padded batches (lesson 10) -----------------------------------------------------------------
def padded_batches(name, panels, title, note="", px=3, row=7, gap=12):
    """Batches as the model computes them, one panel per way of batching.

    panels: [(label, [[length of each example] per batch])]. Each example is a row; its tokens
    are blue, the padding up to the batch's longest example grey: every cell, blue or grey, is a
    position the model computes. px: pixels per token; row: pixels per example."""
    f, small = _font(15), _font(12)
    longest = max(max(b) for _, batches in panels for b in batches)
    pw = longest * px
    ph = max(sum(len(b) * row + gap for b in batches) for _, batches in panels)
    W, H = 40 + len(panels) * (pw + 50), ph + 150 + (24 if note else 0)
    img = Image.new("RGB", (W, H), WHITE)
    d = ImageDraw.Draw(img)
    for p, (label, batches) in enumerate(panels):
        ox, oy = 40 + p * (pw + 50), 90
        real = sum(sum(b) for b in batches)
        computed = sum(max(b) * len(b) for b in batches)
        d.text((ox, oy - 38), label, fill=BLACK, font=f, anchor="ls")
        d.text((ox, oy - 14), f"{computed:,} positions computed for {real:,} tokens "
               f"({computed / real:.2f}x)", fill=GREY, font=small, anchor="ls")
        y = oy
        for b in batches:
            T = max(b)
            for n in b:
                d.rectangle([ox, y, ox + n * px - 1, y + row - 2], fill=(31, 119, 180))
                if n < T:
                    d.rectangle([ox + n * px, y, ox + T * px - 1, y + row - 2], fill=(210, 210, 210))
                y += row
            y += gap
    d.text((W / 2, 12), title, fill=BLACK, font=_font(18), anchor="ma")
    legend_y = H - 30 - (24 if note else 0)
    d.rectangle([40, legend_y, 54, legend_y + 12], fill=(31, 119, 180))
    d.text((60, legend_y + 6), "a token of the conversation", fill=BLACK, font=small, anchor="lm")
    d.rectangle([260, legend_y, 274, legend_y + 12], fill=(210, 210, 210))
    d.text((280, legend_y + 6), "padding (label -100: computed, not learned from)", fill=BLACK,
           font=small, anchor="lm")
    if note:
        d.text((W / 2, H - 20), note, fill=GREY, font=small, anchor="ma")
    return _save(img, name)
