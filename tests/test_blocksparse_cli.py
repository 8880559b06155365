"""`tinyphi3 blocksparse`: the report's Figure 2 for any configuration, its numbers, its errors."""

import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tinyphi3.nn.blocksparse import blocksparse_layout, density, kv_bytes_per_token
from tinyphi3.pictures.blocksparse import LOCAL, SKIPPED, VERTICAL, block_kinds
from tinyphi3.cli import main


def invoke(*args):
    return CliRunner().invoke(main, ["blocksparse", *map(str, args)])


def test_help_explains_with_an_example():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Example" in result.output and "tinyphi3 blocksparse --heads 4" in result.output


@pytest.mark.parametrize("args, layout_args", [
    (["--heads", 4, "--local", 2, "--stride", 3], (4, 16, 2, 3, False)),
    (["--heads", 6, "--local", 3, "--stride", 4, "--blocks", 12, "--homo", "--kv-heads", 2],
     (6, 12, 3, 4, True)),
    (["--heads", 32, "--kv-heads", 8, "--local", 16, "--stride", 8, "--blocks", 40],
     (32, 40, 16, 8, False)),
])
def test_picture_is_written_and_density_is_the_libraries(tmp_path, args, layout_args):
    out = tmp_path / "sub" / "pattern.png"
    result = invoke(*args, "--out", out)
    assert result.exit_code == 0, result.output
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.width > 500 and picture.height > 300
    layout = blocksparse_layout(*layout_args[:4], homo_head=layout_args[4])
    printed = re.search(r"density (\d\.\d+): (\d+) of (\d+) causal blocks", result.output)
    assert printed, result.output
    assert float(printed[1]) == pytest.approx(density(layout), abs=1e-6)
    assert int(printed[2]) / int(printed[3]) == density(layout)
    assert "every earlier block is attended by some head" in result.output


def test_kv_bytes_say_per_query_head_and_per_kv_head(tmp_path):
    # phi-3-small at 4096 tokens: a KV head reads the union of its 4 query heads' blocks
    result = invoke("--heads", 32, "--kv-heads", 8, "--local", 16, "--stride", 8, "--blocks", 64,
                    "--out", tmp_path / "small.png")
    assert result.exit_code == 0, result.output
    layout = blocksparse_layout(32, 64, 16, 8)
    sparse, dense = kv_bytes_per_token(layout, 64 * 64, 64, 8, 128)
    assert f"all 8 KV heads: {sparse:,} of {dense:,} bytes" in result.output
    assert "per query head (mean of 32)" in result.output
    assert "per KV head (union over its 4 query heads)" in result.output
    per_query, _ = kv_bytes_per_token(layout, 64 * 64, 64, 32, 128)      # one query head a group
    assert f"per query head (mean of 32): {per_query / 32:,.0f} bytes" in result.output
    assert per_query / 32 < sparse / 8                       # sharing KV heads costs sparsity


def test_coverage_failure_is_printed(tmp_path):
    # 4 heads and stride 8: offsets 0, 2, 4, 6 leave half the remote blocks to no head
    result = invoke("--heads", 4, "--local", 2, "--stride", 8, "--blocks", 20,
                    "--out", tmp_path / "p.png")
    assert result.exit_code == 0, result.output
    assert "every earlier block is attended by some head: no" in result.output


def test_block_kinds_colour_what_the_layout_says():
    layout = blocksparse_layout(2, 6, 2, 3)
    kinds = block_kinds(layout, 2)
    assert np.array_equal(kinds == LOCAL, layout & (kinds == LOCAL))        # local: attended
    assert np.array_equal((kinds == LOCAL) | (kinds == VERTICAL), layout)   # attended: blue/orange
    causal = np.tril(np.ones((6, 6), dtype=bool))
    assert np.array_equal(kinds == SKIPPED, causal & ~layout)              # grey: causal, unread
    assert kinds[0, 5, 2] == VERTICAL and kinds[0, 5, 4] == LOCAL and kinds[0, 5, 3] == SKIPPED


@pytest.mark.parametrize("args, fragment", [
    (["--stride", 0], "--stride must be a positive integer, got 0"),
    (["--heads", 0], "--heads must be a positive integer"),
    (["--local", -1], "--local must be a positive integer"),
    (["--block-size", 0], "--block-size must be a positive integer"),
    (["--local", 20, "--blocks", 16], "--local 20 is more local blocks than --blocks 16"),
    (["--heads", 6, "--kv-heads", 4], "--heads 6 is not a multiple of --kv-heads 4"),
    (["--kv-heads", 0], "--kv-heads must be a positive integer"),
    (["--blocks", 1000], "256 --blocks"),
])
def test_bad_parameters_give_one_clear_line(tmp_path, args, fragment):
    out = tmp_path / "never.png"
    result = invoke(*args, "--out", out)
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert not out.exists()
