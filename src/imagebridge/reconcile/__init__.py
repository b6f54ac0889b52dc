"""Patient identity reconciliation for imported (outside) studies: pure matching and coercion.

``score`` compares demographics with a weighted scorecard; ``coerce`` rewrites a received
dataset to the local identity while keeping the original values (PS3.3 C.12.1.1.9).
Nothing here touches the index, the blob store or the web framework (``services/reconcile.py`` does).
"""
