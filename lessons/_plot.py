"""The lessons draw with tinyphi3.pictures.charts; this name keeps `import _plot` short in the lessons."""
from tinyphi3.pictures.charts import bar_chart, grouped_bars, heatmaps, line_plot  # noqa: F401
