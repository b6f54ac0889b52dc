"""DIMSE surface (PS3.7, PS3.4): the DICOM listener, its service handlers, and an SCU for peers.

Handlers translate between DIMSE messages and the domain (``services``, ``index``)
and nothing else; ``status.py`` is the one mapping of the error tree to DIMSE statuses.
"""
