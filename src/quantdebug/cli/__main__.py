"""``python -m quantdebug.cli``: the same as the ``quantdebug`` console script."""

from quantdebug.cli import main

main()
