"""The ``imagebridge`` command line (Typer + rich)."""
