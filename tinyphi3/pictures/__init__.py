"""Pictures drawn with Pillow: charts (lines, bars, heat maps), the block-sparse layout,
and the passkey grid."""
