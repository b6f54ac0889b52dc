"""Patient identity reconciliation for imported (outside) studies (``docs/reconciliation.md``).

Pure: ``score`` (the weighted demographic scorecard) and ``coerce`` (the local identity written
into a received dataset, originals kept per PS3.3 C.12.1.1.9). Tables: ``records`` (cases, links,
imported instances, outside studies), ``patients`` (the local patients matching reads) and
``sources``. ``services/reconcile.py`` puts them together with the blob store and ``Ingest``.
"""
