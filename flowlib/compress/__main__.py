"""``python -m flowlib.compress``: the command line of :mod:`flowlib.compress.cli`."""

from flowlib.compress.cli import main

if __name__ == "__main__":
    main()
