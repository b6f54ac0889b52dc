"""The access target read before every DICOMweb retrieval (index/access.py ``target``): owner,
restriction and every user a study is excluded for, from its one statement, on both backends."""

from __future__ import annotations

import io
from pathlib import Path

from imagebridge.fhir.index import fhir_id
from imagebridge.index import access
from tests.conftest import make_archive
from tests.factory import make_instance, part10


def test_target_has_the_owner_restriction_and_every_exclusion(tmp_path: Path, database_url: str) -> None:
    archive = make_archive(tmp_path, database_url)
    try:
        ds = make_instance()
        archive.ingest.store_stream(io.BytesIO(part10(ds)))
        study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
        engine = archive.engine

        plain = access.target(engine, "read", study, series, sop)
        assert plain is not None
        assert (plain.patient, plain.restricted, plain.hidden_from) == (fhir_id(ds.PatientID, ""), False, ())
        assert access.target(engine, "read", "1.2.3.4") is None

        access.exclude(engine, "parent", study)
        access.exclude(engine, "aunt", study)
        access.restrict(engine, sop, "sensitive", "asked for", by="test")
        instance = access.target(engine, "read", study, series, sop)
        assert instance is not None and instance.restricted
        assert sorted(instance.hidden_from) == ["aunt", "parent"]
        study_level = access.target(engine, "read", study)
        assert study_level is not None and study_level.restricted
        other_series = access.target(engine, "read", study, "1.2.3.4")
        assert other_series is not None and not other_series.restricted
        assert sorted(other_series.hidden_from) == ["aunt", "parent"]
    finally:
        archive.close()
