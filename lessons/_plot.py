"""The lessons draw with tinyphi3.plot; this name keeps `import _plot` short in the lessons."""
from tinyphi3.plot import bar_chart, grouped_bars, heatmaps, line_plot  # noqa: F401
