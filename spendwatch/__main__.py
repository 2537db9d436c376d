"""``python -m spendwatch`` is the ``spendwatch`` command."""

from spendwatch.cli import main

main()
