"""Side-by-side benchmark of imagebridge and Debian's Orthanc (``python -m bench.run``)."""
