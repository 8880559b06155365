"""Small PNG pictures drawn with Pillow: line plots, bar charts and heatmaps (lessons, model cards).

    line_plot("name.png", {"label": (xs, ys), ...}, title, xlabel, ylabel, log_y=False,
              hlines={"label": y}, legend="upper left"|"upper right"|"lower right", overlap=False,
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
    """Round tick values covering [lo, hi]: powers of ten on a log axis, else 1-2-5 steps."""
    if log:
        return [10.0 ** e for e in range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1)]
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
    for (xs, ys), (color, width) in zip(series.values(), style):
        points = list(zip(px(xs), py(ys)))
        d.line(points, fill=color, width=width)
        if len(points) <= 60 and not overlap:
            for x, y in points:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
    lx = left + 15 if legend.endswith("left") else W - right - 260
    ly = top + 18 if legend.startswith("upper") else H - bottom - 12 - 22 * n
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
                d.text((x + (si + 0.5) * bar - 2, y_of(v) - 4), f"{v:.3g}", fill=BLACK, font=f,
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
