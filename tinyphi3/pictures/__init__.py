"""Pictures drawn with Pillow: charts (lines, bars, heat maps) and the block-sparse layout."""
