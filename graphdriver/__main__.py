"""``python -m graphdriver``."""

from .cli.app import main

main()
