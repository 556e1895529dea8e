"""``python -m paas``: the same as the ``paas`` command."""

from paas.cli import main

main()
