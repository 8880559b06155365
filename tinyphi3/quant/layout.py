"""The 4-bit format's constants: bit width, block sizes, schemes and the packing of levels.

tinyphi3/quant/q4.py explains the layout they describe (two levels per byte in groups of 8 values,
rows in tiles of 64 interleaved group by group); the Numba kernels of
tinyphi3/backends/numba/q4.py read the same constants, so the two cannot drift apart.
"""

BITS = 4
BLOCK_SIZES = (32, 64, 128)
SCHEMES = ("symmetric", "minmax")
LEVELS = 2 ** BITS                    # 16
ROWS_PER_TILE = 64                    # rows interleaved in the packed layout
GROUP = 8                             # values per group of 4 bytes
TILES_PER_CHUNK = 16                  # the reference dequantizes 16 * 64 rows at a time
