"""``python -m flowlib.compress``: the command line of :mod:`flowlib.compress.cli`."""

from flowlib.compress.cli import main

main()
