"""``python -m stream.cli``: the same as the ``rfm`` console script."""

from stream.cli import main

main()
