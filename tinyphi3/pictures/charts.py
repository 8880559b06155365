"""Small PNG pictures drawn with Pillow: line plots, bar charts and heatmaps (lessons, model cards).

    line_plot("name.png", {"label": (xs, ys), ...}, title, xlabel, ylabel, log_y=False,
              hlines={"label": y}, legend="upper left"|"upper right"|"lower right"|"lower left"|
              "best" (the corner that hides the fewest points), overlap=False,
              xticks=["label of x=0", ...])
    bar_chart("name.png", {"label": value, ...}, title, unit)
    grouped_bars("name.png", {"group": {"series": value, ...}, ...}, title, ylabel, vmax=None)
    heatmaps("name.png", [("panel title", matrix), ...], title, vmax=None, annotate=False)

Each writes lesson_outputs/name.png under the current directory (or `name` itself when it is a
path with a directory) and returns its path.
"""

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
GREY, BLACK, WHITE = (150, 150, 150), (0, 0, 0), (255, 255, 255)


def _font(size=15):
    return ImageFont.load_default(size)


def _save(image, name):
    path = Path(name) if Path(name).parent != Path(".") else Path("lesson_outputs") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _label(v):
    return f"{v:,.0f}" if abs(v) >= 1000 and v == int(v) else f"{v:g}"


def _ticks(lo, hi, log):
    """Round tick values covering [lo, hi]: on a log axis (lo and hi in log10 units) powers of
    ten, or 1-2-5 times them, or every digit times them, the first with two ticks in range;
    else 1-2-5 steps."""
    if log:
        for mantissas in ((1,), (1, 2, 5), range(1, 10)):
            ticks = [m * 10.0 ** e for e in range(math.floor(lo) - 1, math.ceil(hi) + 1)
                     for m in mantissas if lo - 1e-9 <= math.log10(m) + e <= hi + 1e-9]
            if len(ticks) >= 2:
                break
        return ticks
    raw = (hi - lo) / 6 or 1.0
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if raw <= m * step)
    return list(np.arange(math.ceil(lo / step) * step, hi + step * 1e-6, step))


def line_plot(name, series, title, xlabel, ylabel, log_y=False, hlines=None,
              legend="upper left", overlap=False, xticks=None, size=(900, 520)):
    """Lines of (xs, ys) pairs on shared axes, with tick labels and a legend.

    hlines: labelled horizontal reference lines; overlap: draw earlier series wider, so that
    lines lying on top of each other all stay visible; xticks: labels for x = 0, 1, 2, ..."""
    hlines = hlines or {}
    W, H = size
    left, right, top, bottom = 90, 30, 50, 60
    img = Image.new("RGB", size, WHITE)
    d = ImageDraw.Draw(img)
    f = _font()
    ys_all = np.concatenate([np.asarray(ys, float) for _, ys in series.values()]
                            + [np.asarray(list(hlines.values()), float)])
    xs_all = np.concatenate([np.asarray(xs, float) for xs, _ in series.values()])
    ty = np.log10 if log_y else (lambda v: np.asarray(v, float))
    y0, y1 = float(ty(ys_all).min()), float(ty(ys_all).max())
    y0 = y0 if log_y or y0 < 0 else 0.0                    # linear axes start at zero
    y0, y1 = (y0 - 0.05 * (y1 - y0 or 1), y1 + 0.05 * (y1 - y0 or 1))
    x0, x1 = float(xs_all.min()), float(xs_all.max())
    px = lambda x: left + (np.asarray(x, float) - x0) / (x1 - x0 or 1) * (W - left - right)
    py = lambda y: H - bottom - (ty(y) - y0) / (y1 - y0) * (H - top - bottom)
    d.rectangle([left, top, W - right, H - bottom], outline=BLACK)
    x_labels = dict(enumerate(xticks)) if xticks else {t: _label(t) for t in _ticks(x0, x1, False)}
    for t, text in x_labels.items():
        d.line([(px(t), H - bottom), (px(t), H - bottom + 5)], fill=BLACK)
        d.text((px(t), H - bottom + 8), text, fill=BLACK, font=f, anchor="ma")
    for t in _ticks(y0, y1, log_y):
        yt = py(t)
        d.line([(left, yt), (W - right, yt)], fill=(230, 230, 230))
        d.text((left - 6, yt), _label(t), fill=BLACK, font=f, anchor="rm")
    for label, y in hlines.items():
        for x in range(left, W - right, 12):                       # dashed
            d.line([(x, py(y)), (min(x + 6, W - right), py(y))], fill=GREY, width=2)
        d.text((W - right - 6, py(y) - 4), label, fill=GREY, font=f, anchor="rd")
    n = len(series)
    style = [(COLORS[i % len(COLORS)], 3 + (4 * (n - 1 - i) if overlap else 0)) for i in range(n)]
    drawn = []                                              # each series' points, in pixels
    for (xs, ys), (color, width) in zip(series.values(), style):
        points = list(zip(px(xs), py(ys)))
        drawn.append(points)
        d.line(points, fill=color, width=width)
        if len(points) <= 60 and not overlap:
            for x, y in points:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)

    def corner(place):
        return (left + 15 if place.endswith("left") else W - right - 260,
                top + 18 if place.startswith("upper") else H - bottom - 12 - 22 * n)

    def covered(place, samples):
        lx, ly = corner(place)
        return sum(lx - 8 <= x <= lx + 250 and ly - 12 <= y <= ly + 22 * n - 10
                   for x, y in samples)

    if legend == "best":                    # the corner whose box covers the fewest line points
        samples = [(xa + (xb - xa) * t, ya + (yb - ya) * t)
                   for points in drawn for (xa, ya), (xb, yb) in zip(points, points[1:])
                   for t in np.linspace(0, 1, 40)]
        legend = min(("upper right", "upper left", "lower right", "lower left"),
                     key=lambda place: covered(place, samples))
    lx, ly = corner(legend)
    d.rectangle([lx - 8, ly - 12, lx + 250, ly + 22 * n - 10], fill=WHITE, outline=GREY)
    for i, (label, (color, width)) in enumerate(zip(series, style)):
        d.line([(lx, ly + 22 * i), (lx + 30, ly + 22 * i)], fill=color, width=width)
        d.text((lx + 37, ly + 22 * i), label, fill=BLACK, font=f, anchor="lm")
    d.text((W / 2, 12), title, fill=BLACK, font=_font(18), anchor="ma")
    d.text(((left + W - right) / 2, H - 22), xlabel, fill=BLACK, font=f, anchor="ma")
    d.text((12, top - 22), ylabel + (" (log scale)" if log_y else ""), fill=BLACK, font=f)
    return _save(img, name)


def bar_chart(name, values, title, unit="", size=(900, 60)):
    """Horizontal bars, one per label, with the value written at the end of each bar."""
    W = size[0]
    H = size[1] + 34 * len(values)
    img = Image.new("RGB", (W, H), WHITE)
    d = ImageDraw.Draw(img)
    f = _font()
    left, right, vmax = 230, 160, max(values.values())
    for i, (label, value) in enumerate(values.items()):
        y = 50 + 34 * i
        x = left + value / vmax * (W - left - right)
        d.rectangle([left, y, x, y + 24], fill=COLORS[i % len(COLORS)])
        d.text((left - 8, y + 12), label, fill=BLACK, font=f, anchor="rm")
        d.text((x + 8, y + 12), f"{value:,.4g} {unit}", fill=BLACK, font=f, anchor="lm")
    d.text((W / 2, 12), title, fill=BLACK, font=_font(18), anchor="ma")
    return _save(img, name)


def grouped_bars(name, groups, title, ylabel="", vmax=None, size=(900, 480)):
    """Vertical bars in groups (one colour per series, the same series in every group), each
    bar with its value on top, and a legend of the series."""
    W, H = size
    img = Image.new("RGB", (W, H), WHITE)
    d = ImageDraw.Draw(img)
    f = _font()
    series = list(dict.fromkeys(s for g in groups.values() for s in g))
    top = vmax or max(v for g in groups.values() for v in g.values()) * 1.15 or 1.0
    left, right, y0, y1 = 60, 30, 110, H - 50
    y_of = lambda v: y1 - v / top * (y1 - y0)                                   # noqa: E731
    for t in _ticks(0.0, top, False):
        d.line([left, y_of(t), W - right, y_of(t)], fill=(230, 230, 230))
        d.text((left - 8, y_of(t)), _label(t), fill=BLACK, font=f, anchor="rm")
    d.line([left, y1, W - right, y1], fill=BLACK)
    slot = (W - left - right) / len(groups)
    bar = slot * 0.7 / len(series)
    for gi, (group, values) in enumerate(groups.items()):
        x = left + gi * slot + slot * 0.15
        for si, s in enumerate(series):
            if s in values:
                v = values[s]
                d.rectangle([x + si * bar, y_of(v), x + (si + 1) * bar - 4, y1],
                            fill=COLORS[si % len(COLORS)])
                text = f"{int(v):,}" if float(v).is_integer() else f"{v:.3g}"
                d.text((x + (si + 0.5) * bar - 2, y_of(v) - 4), text, fill=BLACK, font=f,
                       anchor="md")
        d.text((left + (gi + 0.5) * slot, y1 + 10), group, fill=BLACK, font=f, anchor="ma")
    x = left
    for si, s in enumerate(series):                         # the legend, one row under the title
        d.rectangle([x, 40, x + 14, 54], fill=COLORS[si % len(COLORS)])
        d.text((x + 20, 47), s, fill=BLACK, font=f, anchor="lm")
        x += 20 + d.textlength(s, font=f) + 30
    d.text((W / 2, 12), title, fill=BLACK, font=_font(18), anchor="ma")
    d.text((left - 50, y0 - 28), ylabel, fill=BLACK, font=f, anchor="lm")
    return _save(img, name)


def heatmaps(name, panels, title, vmax=None, annotate=False, cell=None):
    """Matrices side by side, white (0) to dark blue (vmax); row = query, column = key."""
    vmax = vmax or max(float(np.max(m)) for _, m in panels) or 1.0
    rows, cols = np.asarray(panels[0][1]).shape
    cell = cell or max(14, min(48, 420 // max(rows, cols)))
    pw, ph = cols * cell, rows * cell
    W, H = 60 + len(panels) * (pw + 60), ph + 130
    img = Image.new("RGB", (W, H), WHITE)
    d = ImageDraw.Draw(img)
    f, small = _font(14), _font(max(9, cell // 4))
    for p, (label, m) in enumerate(panels):
        m = np.asarray(m, float)
        ox, oy = 60 + p * (pw + 60), 80
        for r in range(rows):
            for c in range(cols):
                level = min(max(m[r, c] / vmax, 0.0), 1.0)
                color = tuple(int(255 - level * (255 - v)) for v in (8, 48, 107))
                box = [ox + c * cell, oy + r * cell, ox + (c + 1) * cell, oy + (r + 1) * cell]
                d.rectangle(box, fill=color, outline=(225, 225, 225))
                if annotate:
                    ink = WHITE if level > 0.5 else BLACK
                    text = "0" if m[r, c] == 0 else f"{m[r, c]:.2f}".lstrip("0")
                    d.text((box[0] + cell / 2, box[1] + cell / 2), text, fill=ink, font=small,
                           anchor="mm")
        step = max(1, rows // 8)
        for i in range(0, max(rows, cols), step):
            if i < rows:
                d.text((ox - 6, oy + (i + 0.5) * cell), str(i), fill=GREY, font=f, anchor="rm")
            if i < cols:
                d.text((ox + (i + 0.5) * cell, oy - 4), str(i), fill=GREY, font=f, anchor="md")
        d.text((ox + pw / 2, oy - 26), label, fill=BLACK, font=f, anchor="md")
        d.text((ox + pw / 2, oy + ph + 8), "key position ->", fill=GREY, font=f, anchor="ma")
    d.text((W / 2, 12), title, fill=BLACK, font=_font(18), anchor="ma")
    d.text((W / 2, H - 22), f"rows: query position; white = 0, dark blue = {vmax:g}",
           fill=GREY, font=f, anchor="ma")
    return _save(img, name)


def line_panels(name, panels, title, xlabel, ylabel, marks=None, panel_size=(330, 380)):
    """Small line plots side by side, one curve each, sharing one y axis (each its own x axis).

    panels: [(panel title, xs, ys), ...]; marks: one x per panel, where a dot is drawn and the
    curve's value there written, to compare the panels at matching points."""
    pw, ph = panel_size
    left, gap, top, bottom = 80, 35, 75, 65
    W, H = left + len(panels) * (pw + gap), top + ph + bottom
    img = Image.new("RGB", (W, H), WHITE)
    d = ImageDraw.Draw(img)
    f = _font()
    ys_all = np.concatenate([np.asarray(ys, float) for _, _, ys in panels])
    y0, y1 = min(float(ys_all.min()), 0.0), float(ys_all.max())   # linear, from zero
    y0, y1 = y0 - 0.05 * (y1 - y0 or 1), y1 + 0.05 * (y1 - y0 or 1)
    py = lambda y: top + ph - (np.asarray(y, float) - y0) / (y1 - y0) * ph   # noqa: E731
    for p, (label, xs, ys) in enumerate(panels):
        xs, ys, ox = np.asarray(xs, float), np.asarray(ys, float), left + p * (pw + gap)
        x0, x1 = float(xs.min()), float(xs.max())

        def px(x, ox=ox, x0=x0, x1=x1):
            return ox + (np.asarray(x, float) - x0) / (x1 - x0 or 1) * pw

        for t in _ticks(y0, y1, False):
            d.line([(ox, py(t)), (ox + pw, py(t))], fill=(230, 230, 230))
            if p == 0:                                      # the shared y axis, labelled once
                d.text((ox - 6, py(t)), _label(t), fill=BLACK, font=f, anchor="rm")
        for t in _ticks(x0, x1, False):
            d.line([(px(t), top + ph), (px(t), top + ph + 5)], fill=BLACK)
            d.text((px(t), top + ph + 8), _label(t), fill=BLACK, font=f, anchor="ma")
        d.rectangle([ox, top, ox + pw, top + ph], outline=BLACK)
        color = COLORS[p % len(COLORS)]
        d.line(list(zip(px(xs), py(ys))), fill=color, width=3)
        if marks is not None:
            x, y = marks[p], float(np.interp(marks[p], xs, ys))
            d.ellipse([px(x) - 6, py(y) - 6, px(x) + 6, py(y) + 6], fill=BLACK)
            d.text((px(x) + 10, py(y) - 10), f"{y:.2f}", fill=BLACK, font=f, anchor="ld")
        d.text((ox + pw / 2, top - 8), label, fill=BLACK, font=f, anchor="md")
    d.text((W / 2, 12), title, fill=BLACK, font=_font(18), anchor="ma")
    d.text((left + (W - left - gap) / 2, H - 24), xlabel, fill=BLACK, font=f, anchor="ma")
    d.text((12, top - 40), ylabel, fill=BLACK, font=f)
    return _save(img, name)


def token_strip(name, tokens, kinds, legend, title, width=1000):
    """Tokens as boxes in reading order, wrapped into rows, each filled with the colour of its
    kind, its position written small under it.

    tokens: the text of each token; kinds: an index into legend for each token (legend: the
    names of the kinds, e.g. ["label -100", "carries a label"])."""
    fills = [(228, 228, 228), (150, 200, 240), (170, 220, 140), (253, 191, 111), (210, 180, 225)]
    f, small = _font(15), _font(10)
    d = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes, x, row = [], 20, 0                               # first pass: where each box goes
    for text in tokens:
        w = max(22, d.textlength(text, font=f) + 12)
        if x + w > width - 20 and x > 20:
            x, row = 20, row + 1
        boxes.append((x, row, w))
        x += w + 4
    top, pitch = 80, 46
    img = Image.new("RGB", (width, top + pitch * (row + 1) + 10), WHITE)
    d = ImageDraw.Draw(img)
    for i, (text, kind, (x, r, w)) in enumerate(zip(tokens, kinds, boxes)):
        y = top + r * pitch
        d.rectangle([x, y, x + w, y + 26], fill=fills[kind % len(fills)], outline=GREY)
        d.text((x + w / 2, y + 13), text, fill=BLACK, font=f, anchor="mm")
        d.text((x + w / 2, y + 29), str(i), fill=GREY, font=small, anchor="ma")
    x = 20
    for k, label in enumerate(legend):                      # the legend, under the title
        d.rectangle([x, 44, x + 16, 60], fill=fills[k % len(fills)], outline=GREY)
        d.text((x + 22, 52), label, fill=BLACK, font=f, anchor="lm")
        x += 22 + d.textlength(label, font=f) + 30
    d.text((width / 2, 12), title, fill=BLACK, font=_font(18), anchor="ma")
    return _save(img, name)


def _arrow(d, points, fill=BLACK, width=2):
    """A polyline with an arrowhead at its last point (segments horizontal or vertical)."""
    d.line(points, fill=fill, width=width)
    (x0, y0), (x1, y1) = points[-2], points[-1]
    ux, uy = np.sign(x1 - x0), np.sign(y1 - y0)                 # the last segment's direction
    d.polygon([(x1, y1), (x1 - 10 * ux - 5 * uy, y1 - 10 * uy - 5 * ux),
               (x1 - 10 * ux + 5 * uy, y1 - 10 * uy + 5 * ux)], fill=fill)


def block_diagram(name, columns, title, inputs="", skips=(), note="", box=(330, 44), gap=50):
    """Boxes joined by arrows: top to bottom within a column, then on to the next column; every
    arrow carries a label (a tensor's shape, say) written beside it.

    columns: [[(box text, label of the arrow that leaves the box), ...], ...]. A box "+" is drawn
    as a circle (a sum). The last box of a column sends its arrow to the top of the next column;
    the very last arrow leaves the picture. inputs: the label of the arrow entering the first box.
    skips: [(column, i, j, label)]: an arrow on the left of the column from the arrow that enters
    box i to box j (a residual connection)."""
    bw, bh = box
    f, small = _font(15), _font(14)
    widths = [70 + bw + max(int(max(small.getlength(lab) for _, lab in col)) + 30, 120)
              for col in columns]                       # each column: skip, box, labels
    starts = [20 + sum(widths[:c]) for c in range(len(columns))]
    top = 60
    n_rows = max(len(col) for col in columns)
    W, H = 20 + sum(widths), top + gap + n_rows * (bh + gap) + (30 if note else 0)
    img = Image.new("RGB", (W, H), WHITE)
    d = ImageDraw.Draw(img)
    blue = COLORS[0]
    centre = lambda c: starts[c] + 70 + bw / 2                              # noqa: E731
    box_top = lambda i: top + gap + i * (bh + gap)                                # noqa: E731

    def entering(c, i, label, start=None):            # the arrow into box i of column c
        cx, y1 = centre(c), box_top(i) - (14 if columns[c][i][0] == "+" else 0)
        y0 = box_top(i) - gap if start is None else start
        _arrow(d, [(cx, y0), (cx, y1)])
        d.text((cx + 12, (y0 + y1) / 2), label, fill=blue, font=small, anchor="lm")

    for c, col in enumerate(columns):
        cx = centre(c)
        for i, (text, _) in enumerate(col):
            y = box_top(i)
            if text == "+":
                d.ellipse([cx - 14, y - 14, cx + 14, y + 14], outline=BLACK, width=2)
                d.text((cx, y), "+", fill=BLACK, font=_font(20), anchor="mm")
            else:
                d.rounded_rectangle([cx - bw / 2, y, cx + bw / 2, y + bh], radius=6,
                                    fill=(235, 242, 250), outline=BLACK, width=2)
                d.multiline_text((cx, y + bh / 2), text, fill=BLACK, font=f, anchor="mm",
                                 align="center")
            bottom = y + (14 if text == "+" else bh)
            if i + 1 < len(col):
                entering(c, i + 1, col[i][1], start=bottom)
        last = box_top(len(col) - 1) + (14 if col[-1][0] == "+" else bh)
        if c == 0:
            entering(0, 0, inputs)
        if c + 1 < len(columns):                        # on to the top of the next column
            mid = starts[c + 1] + 35
            d.line([(cx, last), (cx, last + 18), (mid - 25, last + 18), (mid - 25, top),
                    (centre(c + 1), top)], fill=BLACK, width=2)
            entering(c + 1, 0, col[-1][1], start=top)
        else:                                           # out of the picture
            _arrow(d, [(cx, last), (cx, last + gap - 10)])
            d.text((cx + 12, last + gap / 2), col[-1][1], fill=blue, font=small, anchor="lm")
    for c, i, j, label in skips:
        cx, x = centre(c), centre(c) - bw / 2 - 30
        y0, y1 = box_top(i) - gap / 2, box_top(j)
        d.ellipse([cx - 4, y0 - 4, cx + 4, y0 + 4], fill=BLACK)
        _arrow(d, [(cx, y0), (x, y0), (x, y1), (cx - 14, y1)], fill=COLORS[1])
        d.text((x - 6, (y0 + y1) / 2), label, fill=COLORS[1], font=small, anchor="rm")
    d.text((W / 2, 12), title, fill=BLACK, font=_font(18), anchor="ma")
    if note:
        d.text((W / 2, H - 26), note, fill=GREY, font=small, anchor="ma")
    return _save(img, name)


def probability_bars(name, labels, probs, title, cuts=None, xlabel="", ylabel="probability",
                     size=(1000, 520)):
    """Probabilities as vertical bars in the order given (most likely first, say), each labelled
    below (labels written at a slant), and cuts: {"label": n}, a dashed line after the first n
    bars, with the label and the probability that the n bars hold. A bar's shade says how many
    cuts keep it: dark blue all of them, lighter fewer, grey none."""
    cuts = cuts or {}
    W, H = size
    left, right, top, bottom = 80, 30, 60, 95
    img = Image.new("RGB", size, WHITE)
    d = ImageDraw.Draw(img)
    f, small = _font(15), _font(14)
    probs = np.asarray(probs, float)
    vmax = float(probs.max()) * 1.1
    slot = (W - left - right) / len(probs)
    y_of = lambda v: H - bottom - v / vmax * (H - top - bottom)                  # noqa: E731
    for t in _ticks(0.0, vmax, False):
        d.line([(left, y_of(t)), (W - right, y_of(t))], fill=(230, 230, 230))
        d.text((left - 8, y_of(t)), _label(t), fill=BLACK, font=f, anchor="rm")
    shades = [(31, 119, 180), (140, 185, 220), (190, 215, 235)]
    for i, (label, p) in enumerate(zip(labels, probs)):
        x = left + i * slot
        dropped = sum(i >= n for n in cuts.values())       # how many cuts leave bar i out
        color = GREY if cuts and dropped == len(cuts) else shades[min(dropped, 2)]
        d.rectangle([x + slot * 0.15, y_of(p), x + slot * 0.85, y_of(0)], fill=color)
        text = Image.new("RGBA", (int(small.getlength(label)) + 4, 18), (0, 0, 0, 0))
        ImageDraw.Draw(text).text((0, 0), label, fill=BLACK, font=small)
        text = text.rotate(40, expand=True)
        img.paste(text, (int(x + slot / 2 - text.width + 6), int(y_of(0) + 6)), text)
    d.line([(left, y_of(0)), (W - right, y_of(0))], fill=BLACK)
    for k, (label, n) in enumerate(sorted(cuts.items(), key=lambda item: item[1])):
        x = left + n * slot
        for y in range(top, int(y_of(0)), 12):                                 # dashed
            d.line([(x, y), (x, min(y + 6, y_of(0)))], fill=COLORS[1 + k % 4], width=2)
        d.text((x + 6, top + 8 + 40 * k), label, fill=COLORS[1 + k % 4], font=f, anchor="la")
        d.text((x + 6, top + 26 + 40 * k), f"keeps {n} tokens, p = {probs[:n].sum():.2f}",
               fill=COLORS[1 + k % 4], font=small, anchor="la")
    d.text((W / 2, 12), title, fill=BLACK, font=_font(18), anchor="ma")
    d.text((12, top - 26), ylabel, fill=BLACK, font=f)
    d.text(((left + W - right) / 2, H - 22), xlabel, fill=BLACK, font=f, anchor="ma")
    return _save(img, name)


def cell_rows(name, rows, title, legend, note="", unit=(36, 30)):
    """Rows of coloured, labelled cells on one grid: memory layouts drawn slot by slot.

    rows: [(row label, cells), ...]; a cell is (text, kind) or (text, kind, span): it is `span`
    grid units wide (1 by default) and filled with the colour of `kind`, an index into legend
    (the names of the kinds, drawn under the title); kind None leaves a gap. A row without cells
    is a heading. unit: one grid unit's width and a row's height, in pixels."""
    fills = [(120, 170, 220), (200, 225, 245), (245, 170, 100), (252, 215, 175),
             (140, 200, 120), (205, 235, 195), (180, 150, 210), (225, 210, 240),
             (230, 130, 130), (245, 200, 200)]
    uw, uh = unit
    f, small = _font(15), _font(13)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 20 + max([probe.textlength(label, font=f) for label, cells in rows if cells] + [0]) + 12
    units = max(sum(c[2] if len(c) > 2 else 1 for c in cells) for _, cells in rows)
    x, lines = 20, 0                                        # the legend, wrapped to the width
    width = max(int(left + units * uw + 20), 700)
    for label in legend:
        step = 22 + probe.textlength(label, font=f) + 26
        if x + step > width - 20 and x > 20:
            x, lines = 20, lines + 1
        x += step
    top = 50 + 24 * (lines + 1) + 10
    pitch = uh + 10
    H = top + pitch * len(rows) + (34 if note else 10)
    img = Image.new("RGB", (width, H), WHITE)
    d = ImageDraw.Draw(img)
    for r, (label, cells) in enumerate(rows):
        y = top + r * pitch
        if not cells:                                       # a heading
            d.text((20, y + uh - 4), label, fill=BLACK, font=_font(16), anchor="ls")
            continue
        d.text((left - 10, y + uh / 2), label, fill=BLACK, font=f, anchor="rm")
        x = left
        for cell in cells:
            text, kind, span = (*cell, 1)[:3]
            w = span * uw
            if kind is not None:
                d.rectangle([x + 1, y, x + w - 1, y + uh], fill=fills[kind % len(fills)],
                            outline=GREY)
                font = f if probe.textlength(text, font=f) <= w - 4 else small
                d.text((x + w / 2, y + uh / 2), text, fill=BLACK, font=font, anchor="mm")
            x += w
    x, y = 20, 50
    for k, label in enumerate(legend):                      # the legend, under the title
        step = 22 + d.textlength(label, font=f) + 26
        if x + step > width - 20 and x > 20:
            x, y = 20, y + 24
        d.rectangle([x, y - 8, x + 16, y + 8], fill=fills[k % len(fills)], outline=GREY)
        d.text((x + 22, y), label, fill=BLACK, font=f, anchor="lm")
        x += step
    d.text((width / 2, 12), title, fill=BLACK, font=_font(18), anchor="ma")
    if note:
        d.text((width / 2, H - 24), note, fill=GREY, font=small, anchor="ma")
    return _save(img, name)
