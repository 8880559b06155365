"""Options shared by several `tinyphi3` commands."""

import click


def _set_backend(ctx, param, value):
    from tinyphi3 import backends
    if value is not None:
        backends.set_backend(value)
    return value


backend_option = click.option(
    "--backend", type=click.Choice(["numpy", "numba"]), default=None, callback=_set_backend,
    expose_value=False, is_eager=True,
    help="numba: the fast kernels (the default where Numba is installed); numpy: the readable "
         "reference, slower.")
