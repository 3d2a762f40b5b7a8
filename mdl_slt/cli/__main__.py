"""`python -m mdl_slt.cli`, as the `mdl-slt` console script."""

from mdl_slt.cli import main

main()
