"""``python -m convdiff.cli``: the console entry point."""

from convdiff.cli import main

main()
