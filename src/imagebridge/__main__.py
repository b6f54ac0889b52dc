"""``python -m imagebridge`` is the ``imagebridge`` command."""

from imagebridge.cli.main import main

if __name__ == "__main__":  # worker processes import this module again
    main()
