"""`tinyphi3 blocksparse`: the report's Figure 2 for a layout of your choosing, and what it
saves."""

import click


@click.command("blocksparse")
@click.option("--heads", type=int, default=4, show_default=True,
              help="Query heads; each gets its own pattern and panel.")
@click.option("--local", "local_blocks", type=int, default=2, show_default=True,
              help="Local blocks: a query block sees itself and the LOCAL - 1 blocks before it.")
@click.option("--stride", type=int, default=3, show_default=True,
              help="Vertical stride: further back, one key block in every STRIDE (shifted per "
                   "head).")
@click.option("--blocks", type=int, default=16, show_default=True,
              help="Blocks to draw (query blocks x key blocks), at most 256.")
@click.option("--homo", is_flag=True, help="The same pattern for every head.")
@click.option("--block-size", type=int, default=64, show_default=True, help="Tokens per block.")
@click.option("--kv-heads", type=int, default=None,
              help="Key/value heads (grouped-query attention)  [default: as many as --heads]")
@click.option("--head-dim", type=int, default=128, show_default=True,
              help="Head dimension, for the KV-cache bytes.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
def blocksparse_command(heads, local_blocks, stride, blocks, homo, block_size, kv_heads, head_dim,
                        out):
    """Draw the block-sparse attention pattern of phi-3-small (the Phi-3 report's Figure 2) for
    any configuration; print its density and the KV cache it reads.

    One panel per head, query blocks down and key blocks across: blue blocks are local, orange
    ones vertical (remote blocks at a stride, each head shifted), grey ones skipped. Density is
    the fraction of causal blocks, over all heads, that are attended. KV bytes are what one layer
    reads from its cache (2 bytes a value) to generate one token after BLOCKS x BLOCK-SIZE
    tokens: per query head, and per KV head, which serves heads / kv-heads query heads and so
    reads the union of their blocks. The defaults draw the report's toy setting.

    \b
    Examples:
      tinyphi3 blocksparse --heads 4 --local 2 --stride 3 --out figure2.png
      tinyphi3 blocksparse --heads 32 --kv-heads 8 --local 16 --stride 8 --blocks 64 --out small.png
    """
    import numpy as np

    from tinyphi3.nn.blocksparse import blocksparse_layout, density, kv_bytes_per_token
    from tinyphi3.pictures.blocksparse import draw_layout
    from tinyphi3.errors import InvalidInputError
    kv_heads = heads if kv_heads is None else kv_heads
    for option, value in [("--heads", heads), ("--local", local_blocks), ("--stride", stride),
                          ("--blocks", blocks), ("--block-size", block_size),
                          ("--kv-heads", kv_heads), ("--head-dim", head_dim)]:
        if value < 1:
            raise InvalidInputError(f"{option} must be a positive integer, got {value}")
    if local_blocks > blocks:
        raise InvalidInputError(f"--local {local_blocks} is more local blocks than --blocks "
                                f"{blocks}")
    if heads % kv_heads:
        raise InvalidInputError(f"--heads {heads} is not a multiple of --kv-heads {kv_heads}: "
                                f"every KV head serves the same number of query heads")
    if heads > 64 or blocks > 256:
        raise InvalidInputError(f"at most 64 --heads and 256 --blocks can be drawn, got {heads} "
                                f"and {blocks}")
    layout = blocksparse_layout(heads, blocks, local_blocks, stride, homo_head=homo)  # [H, NB, NB]
    causal = heads * blocks * (blocks + 1) // 2
    active = int(layout.sum())                       # the layout is zero above the diagonal
    union = layout.any(axis=0)[np.tril_indices(blocks)]   # [NB, NB] -> the causal blocks
    fraction = density(layout)
    config = (f"{heads} heads ({kv_heads} KV), {local_blocks} local blocks, vertical stride "
              f"{stride}{', same pattern for all heads' if homo else ''}, {blocks} blocks of "
              f"{block_size} tokens")
    draw_layout(out, layout, local_blocks, f"Block-sparse attention: {config}",
                f"density {fraction:.3f} of the causal blocks; rows: query blocks, "
                f"columns: key blocks")
    length = blocks * block_size
    per_token = 2 * head_dim * 2                     # a key and a value, 2 bytes a number
    per_query, _ = kv_bytes_per_token(layout, length, block_size, heads, head_dim)
    per_group, dense = kv_bytes_per_token(layout, length, block_size, kv_heads, head_dim)
    click.echo(config)
    click.echo(f"density {fraction:.6f}: {active} of {causal} causal blocks (all heads) "
               f"are attended")
    click.echo("every earlier block is attended by some head: "
               + ("yes" if union.all() else f"no, {int((~union).sum())} blocks by none"))
    click.echo(f"KV cache read by one layer for the token after {length} tokens "
               f"(2 bytes a value, head_dim {head_dim}), dense = {length * per_token:,} bytes "
               f"per head:")
    click.echo(f"  per query head (mean of {heads}): {per_query / heads:,.0f} bytes, "
               f"{per_query / (heads * length * per_token):.1%} of dense")
    click.echo(f"  per KV head (union over its {heads // kv_heads} query heads): "
               f"{per_group / kv_heads:,.0f} bytes, {per_group / dense:.1%} of dense; "
               f"all {kv_heads} KV heads: {per_group:,} of {dense:,} bytes")
    click.echo(f"picture: {out}")
