"""``python -m convdiff``: the console entry point."""

from convdiff.cli import main

main()
