"""``python -m imagebridge`` is the ``imagebridge`` command."""

from imagebridge.cli.main import main

main()
