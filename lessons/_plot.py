"""The lessons draw with tinyphi3.pictures.charts; this name keeps `import _plot` short in the lessons."""
from tinyphi3.pictures.charts import bar_chart, grouped_bars, heatmaps, line_plot  # noqa: F401
from tinyphi3.pictures.charts import token_strip  # noqa: F401
from tinyphi3.pictures.charts import block_diagram, probability_bars  # noqa: F401
from tinyphi3.pictures.charts import cell_rows  # noqa: F401
