"""`python -m tinyphi3.cli ...` runs the `tinyphi3` command."""

from tinyphi3.cli import main

main()
