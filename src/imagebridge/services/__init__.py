"""Use cases: ingest, query, retrieve, delete, render. No HTTP, no DIMSE here."""
