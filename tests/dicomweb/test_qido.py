"""QIDO-RS matching (PS3.18 §8.3.4, §10.6; PS3.4 §C.2.2.2) on SQLite and PostgreSQL.

One archive per backend holds five studies whose attributes are chosen to tell the
matching rules apart; each test asks one question and checks exactly which studies answer.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid

from imagebridge.services.archive import Archive
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.conftest import BACKENDS, _temporary_pg_database, make_archive
from tests.factory import make_instance, part10


@dataclass
class Corpus:
    url: str
    studies: dict[str, str]  # label -> StudyInstanceUID
    series: dict[str, str]  # label -> SeriesInstanceUID
    sops: dict[str, list[str]]  # series label -> SOP Instance UIDs


STUDIES: dict[str, dict[str, Any]] = {
    "s1": dict(
        PatientName="Doe^John",
        PatientID="P1",
        StudyDate="20200115",
        StudyTime="101500",
        AccessionNumber="ACC1",
        StudyDescription="Head CT",
        ReferringPhysicianName="House^Gregory",
        InstitutionName="General Hospital",
    ),
    "s2": dict(
        PatientName="DOE^JANE",
        PatientID="P2",
        StudyDate="20201231",
        StudyTime="235900",
        AccessionNumber="ACC_2",
        StudyDescription="100% chest",
    ),
    "s3": dict(
        PatientName="Müller^Hans",
        SpecificCharacterSet="ISO_IR 100",
        PatientID="P3",
        StudyDate="20210601",
        StudyTime="080000",
        AccessionNumber="ACC3",
        StudyDescription="Knee",
    ),
    "s4": dict(PatientName="Dobson^Amy^^^", PatientID="P%4", StudyDate="20190301", StudyTime=None),
    "s5": dict(PatientName="Jones^Bob", PatientID="P5", StudyDate=None, StudyTime="1200"),
}
# series label -> (study label, modality, number of instances)
SERIES = {
    "s1-ct": ("s1", "CT", 3),
    "s1-mr": ("s1", "MR", 1),
    "s2-cr": ("s2", "CR", 1),
    "s3-mr": ("s3", "MR", 2),
    "s4-us": ("s4", "US", 1),
    "s5-ct": ("s5", "CT", 1),
}


def _store_corpus(archive: Archive) -> Corpus:
    studies = {label: generate_uid() for label in STUDIES}
    series = {label: generate_uid() for label in SERIES}
    sops: dict[str, list[str]] = {}
    for number, (label, (study, modality, count)) in enumerate(SERIES.items(), start=1):
        sops[label] = []
        for index in range(count):
            ds = make_instance(
                study=studies[study],
                series=series[label],
                Modality=modality,
                SeriesNumber=number,
                InstanceNumber=count - index,
                SeriesDescription=f"{modality} series",
                **STUDIES[study],
            )
            archive.ingest.store_stream(io.BytesIO(part10(ds)))
            sops[label].append(ds.SOPInstanceUID)
    return Corpus("", studies, series, sops)


@pytest.fixture(scope="module", params=BACKENDS)
def corpus(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    tmp: Path = tmp_path_factory.mktemp(f"qido-{request.param}")
    urls = (
        iter([f"sqlite:///{tmp / 'index.sqlite3'}"])
        if request.param == "sqlite"
        else _temporary_pg_database()
    )
    for database_url in urls:
        archive = make_archive(tmp, database_url)
        data = _store_corpus(archive)
        running = BackgroundServer(create_app(archive)).start()
        data.url = f"{running.url}/dicomweb"
        yield data
        running.stop()
        archive.close()


def _get(corpus: Corpus, path: str, params: Any = None, **kwargs: Any) -> httpx.Response:
    return httpx.get(corpus.url + path, params=params, timeout=30, **kwargs)


def _labels(corpus: Corpus, answers: list[dict[str, Any]]) -> set[str]:
    by_uid = {uid: label for label, uid in corpus.studies.items()}
    return {by_uid[a["0020000D"]["Value"][0]] for a in answers}


def _studies(corpus: Corpus, **params: str) -> set[str]:
    response = _get(corpus, "/studies", params)
    assert response.status_code == 200, response.text
    return _labels(corpus, response.json())


def _value(answer: dict[str, Any], key: str) -> Any:
    return answer.get(key, {}).get("Value", [None])[0]


# --- the study level: required and computed attributes ---------------------------------------

STUDY_REQUIRED = [
    "00080020", "00080030", "00080050", "00080056", "00080061", "00080090", "00081190",
    "00100010", "00100020", "00100030", "00100040", "0020000D", "00200010", "00201206", "00201208",
]  # fmt: skip


def test_all_studies_carry_the_required_attributes_even_when_empty(corpus: Corpus) -> None:
    answers = _get(corpus, "/studies").json()
    assert _labels(corpus, answers) == set(STUDIES)
    for answer in answers:
        assert set(STUDY_REQUIRED) <= set(answer), sorted(set(STUDY_REQUIRED) - set(answer))
    s4 = next(a for a in answers if _value(a, "0020000D") == corpus.studies["s4"])
    assert s4["00080050"] == {"vr": "SH"} and s4["00080030"] == {"vr": "TM"}


def test_computed_study_attributes(corpus: Corpus) -> None:
    (s1,) = _get(corpus, "/studies", {"StudyInstanceUID": corpus.studies["s1"]}).json()
    assert s1["00080061"]["Value"] == ["CT", "MR"]
    assert _value(s1, "00201206") == 2 and _value(s1, "00201208") == 4
    assert _value(s1, "00080056") == "ONLINE"
    retrieve = _value(s1, "00081190")
    assert retrieve == f"{corpus.url}/studies/{corpus.studies['s1']}"
    assert httpx.get(retrieve + "/metadata", timeout=30).status_code == 200


def test_dicomweb_client_search_for_studies(corpus: Corpus) -> None:
    client = DICOMwebClient(corpus.url)
    found = client.search_for_studies(search_filters={"PatientID": "P1"}, fields=["StudyDescription"])
    assert [_value(a, "00081030") for a in found] == ["Head CT"]
    assert _labels(corpus, client.search_for_studies(search_filters={"PatientName": "doe*"})) == {"s1", "s2"}
    assert _labels(
        corpus, client.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "jo"})
    ) == {
        "s1",
        "s5",
    }
    page = client.search_for_studies(limit=2, offset=1)
    assert len(page) == 2


# --- single values, UID lists -----------------------------------------------------------------


def test_uid_single_and_list_matching(corpus: Corpus) -> None:
    s1, s2, s3 = (corpus.studies[k] for k in ("s1", "s2", "s3"))
    assert _studies(corpus, StudyInstanceUID=s1) == {"s1"}
    assert _studies(corpus, StudyInstanceUID=f"{s1},{s2}") == {"s1", "s2"}
    assert _studies(corpus, StudyInstanceUID=f"{s1}\\{s3}") == {"s1", "s3"}
    assert _studies(corpus, **{"0020000D": s2}) == {"s2"}
    repeated = _get(corpus, "/studies", [("StudyInstanceUID", s1), ("StudyInstanceUID", s3)])
    assert _labels(corpus, repeated.json()) == {"s1", "s3"}
    assert _studies(corpus, StudyInstanceUID="1.2.3.999") == set()


def test_single_value_text_is_exact_and_case_sensitive(corpus: Corpus) -> None:
    assert _studies(corpus, PatientID="P1") == {"s1"}
    assert _studies(corpus, PatientID="p1") == set()
    assert _studies(corpus, AccessionNumber="ACC_2") == {"s2"}
    assert _studies(corpus, AccessionNumber="ACC") == set()
    assert _studies(corpus, StudyDescription="Head CT") == {"s1"}


def test_empty_value_is_universal(corpus: Corpus) -> None:
    assert _studies(corpus, PatientID="", StudyDate="") == set(STUDIES)
    assert _studies(corpus, PatientID="*") == set(STUDIES)


# --- wildcards --------------------------------------------------------------------------------


def test_wildcards(corpus: Corpus) -> None:
    assert _studies(corpus, PatientID="P*") == set(STUDIES)
    assert _studies(corpus, PatientID="P?") == {"s1", "s2", "s3", "s5"}
    assert _studies(corpus, PatientID="*4") == {"s4"}
    assert _studies(corpus, StudyDescription="*CT") == {"s1"}
    assert _studies(corpus, StudyDescription="head*") == set(), "non-PN wildcards are case-sensitive"


def test_percent_and_underscore_in_data_are_literal(corpus: Corpus) -> None:
    assert _studies(corpus, PatientID="P%4") == {"s4"}
    assert _studies(corpus, PatientID="P%*") == {"s4"}
    assert _studies(corpus, PatientID="P_") == set()
    assert _studies(corpus, AccessionNumber="ACC_*") == {"s2"}
    assert _studies(corpus, AccessionNumber="ACC?") == {"s1", "s3"}
    assert _studies(corpus, StudyDescription="100%*") == {"s2"}
    assert _studies(corpus, StudyDescription="1_0*") == set()


# --- person names -----------------------------------------------------------------------------


def test_person_name_single_value_is_case_insensitive_and_matches_leading_components(corpus: Corpus) -> None:
    assert _studies(corpus, PatientName="doe") == {"s1", "s2"}
    assert _studies(corpus, PatientName="DOE^JOHN") == {"s1"}
    assert _studies(corpus, PatientName="doe^john^") == {"s1"}
    assert _studies(corpus, PatientName="Dobson^Amy") == {"s4"}
    assert _studies(corpus, PatientName="Do") == set()
    assert _studies(corpus, PatientName="müller^hans") == {"s3"}
    assert _studies(corpus, ReferringPhysicianName="house") == {"s1"}


def test_person_name_wildcards(corpus: Corpus) -> None:
    assert _studies(corpus, PatientName="Doe*") == {"s1", "s2"}
    assert _studies(corpus, PatientName="do*") == {"s1", "s2", "s4"}
    assert _studies(corpus, PatientName="*^J*") == {"s1", "s2"}
    assert _studies(corpus, PatientName="D?E^*") == {"s1", "s2"}


def test_fuzzy_matching_finds_component_prefixes_in_any_order(corpus: Corpus) -> None:
    assert _studies(corpus, PatientName="jo", fuzzymatching="true") == {"s1", "s5"}
    assert _studies(corpus, PatientName="john doe", fuzzymatching="true") == {"s1"}
    assert _studies(corpus, PatientName="ami", fuzzymatching="true") == set()
    assert _studies(corpus, PatientName="am", fuzzymatching="true") == {"s4"}
    assert _studies(corpus, PatientName="MÜLL", fuzzymatching="true") == {"s3"}
    assert _studies(corpus, PatientName="jo", fuzzymatching="false") == set()


# --- dates and times --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20200115", {"s1"}),
        ("20200101-20201231", {"s1", "s2"}),
        ("20200115-20200115", {"s1"}),
        ("-20201231", {"s1", "s2", "s4"}),
        ("20200116-", {"s2", "s3"}),
        ("-2020", {"s1", "s2", "s4"}),
        ("2020-", {"s1", "s2", "s3"}),
        ("2021", {"s3"}),
        ("202012", {"s2"}),
        ("20200115\\20210601", {"s1", "s3"}),
    ],
)
def test_date_matching(corpus: Corpus, value: str, expected: set[str]) -> None:
    assert _studies(corpus, StudyDate=value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("101500", {"s1"}),
        ("1015", {"s1"}),
        ("10", {"s1"}),
        ("1000-1100", {"s1"}),
        ("10:00-11:00", {"s1"}),
        ("-0900", {"s3"}),
        ("2359-", {"s2"}),
        ("1200-", {"s2", "s5"}),
        ("2300-0900", {"s2", "s3"}),
    ],
)
def test_time_matching(corpus: Corpus, value: str, expected: set[str]) -> None:
    assert _studies(corpus, StudyTime=value) == expected


def test_study_date_and_time_ranges_combine(corpus: Corpus) -> None:
    # 1 Jan 2020 11:00 to 31 Dec 2020 23:59: s1 (15 Jan, 10:15) is inside although 10:15
    # is outside 11:00-23:59 (PS3.4 §C.2.2.2.5.1).
    assert _studies(corpus, StudyDate="20200101-20201231", StudyTime="1100-2359") == {"s1", "s2"}
    assert _studies(corpus, StudyDate="20200115-20201231", StudyTime="1100-2358") == set()
    assert _studies(corpus, StudyDate="20190302-", StudyTime="1200-") == {"s1", "s2", "s3"}
    assert _studies(corpus, StudyDate="20190301-", StudyTime="1200-") == {"s1", "s2", "s3", "s4"}, (
        "a study without a time matches on its date"
    )
    assert _studies(corpus, StudyDate="20200115", StudyTime="1100-2359") == set(), "single date: independent"


# --- ModalitiesInStudy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("CT", {"s1", "s5"}),
        ("MR", {"s1", "s3"}),
        ("CT,US", {"s1", "s4", "s5"}),
        ("CR\\US", {"s2", "s4"}),
        ("C?", {"s1", "s2", "s5"}),
        ("M*", {"s1", "s3"}),
        ("XA", set()),
    ],
)
def test_modalities_in_study(corpus: Corpus, value: str, expected: set[str]) -> None:
    assert _studies(corpus, ModalitiesInStudy=value) == expected


# --- series and instance levels ---------------------------------------------------------------


def test_series_of_a_study(corpus: Corpus) -> None:
    client = DICOMwebClient(corpus.url)
    found = client.search_for_series(corpus.studies["s1"])
    assert [_value(a, "00080060") for a in found] == ["CT", "MR"]
    assert [_value(a, "00201209") for a in found] == [3, 1]
    for answer in found:
        assert {"0020000E", "00200011", "0008103E", "00400244", "00400245", "00081190"} <= set(answer)
        assert "00100010" not in answer, "study attributes are not repeated when the study is in the path"
        assert _value(answer, "0020000D") == corpus.studies["s1"]
    assert client.search_for_series(corpus.studies["s1"], search_filters={"Modality": "MR"})[0]["0020000E"][
        "Value"
    ] == [corpus.series["s1-mr"]]


def test_series_across_studies_carry_study_attributes(corpus: Corpus) -> None:
    found = _get(corpus, "/series", {"Modality": "MR", "PatientID": "P*"}).json()
    assert {_value(a, "0020000E") for a in found} == {corpus.series["s1-mr"], corpus.series["s3-mr"]}
    assert all("00100010" in a and "00201208" in a for a in found)
    assert _get(corpus, "/series", {"SeriesNumber": "2"}).json()[0]["0020000E"]["Value"] == [
        corpus.series["s1-mr"]
    ]


def test_instances_of_a_series_in_instance_number_order(corpus: Corpus) -> None:
    client = DICOMwebClient(corpus.url)
    found = client.search_for_instances(corpus.studies["s1"], corpus.series["s1-ct"])
    assert [_value(a, "00200013") for a in found] == [1, 2, 3]
    for answer in found:
        assert {"00080016", "00080018", "00080056", "00081190", "00280010", "00280011", "00280008"} <= set(
            answer
        )
        assert _value(answer, "00280010") == 4
        assert "00080060" not in answer and "00100010" not in answer


def test_instances_of_a_study_carry_series_attributes(corpus: Corpus) -> None:
    found = _get(corpus, f"/studies/{corpus.studies['s1']}/instances").json()
    assert len(found) == 4
    assert {_value(a, "00080060") for a in found} == {"CT", "MR"}
    assert all("00100010" not in a for a in found)
    everywhere = _get(corpus, "/instances", {"SOPInstanceUID": corpus.sops["s3-mr"][0]}).json()
    assert len(everywhere) == 1 and _value(everywhere[0], "00100020") == "P3"
    numbered = _get(corpus, f"/studies/{corpus.studies['s1']}/instances", {"InstanceNumber": "2"}).json()
    assert [_value(a, "00200013") for a in numbered] == [2]


def test_instance_retrieve_url_resolves(corpus: Corpus) -> None:
    (answer,) = _get(corpus, "/instances", {"SOPInstanceUID": corpus.sops["s2-cr"][0]}).json()
    response = httpx.get(
        _value(answer, "00081190"),
        headers={"Accept": 'multipart/related; type="application/dicom"'},
        timeout=30,
    )
    assert response.status_code == 200


# --- includefield -----------------------------------------------------------------------------


def test_ohif_study_list_call(corpus: Corpus) -> None:
    response = httpx.get(
        f"{corpus.url}/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060",
        headers={"Accept": "application/dicom+json"},
        timeout=30,
    )
    assert response.status_code == 200
    answers = response.json()
    assert len(answers) == 5
    for answer in answers:
        assert "00081030" in answer and "00080060" in answer
    s1 = next(a for a in answers if _value(a, "0020000D") == corpus.studies["s1"])
    assert _value(s1, "00081030") == "Head CT"


def test_ohif_series_call(corpus: Corpus) -> None:
    response = httpx.get(
        f"{corpus.url}/studies/{corpus.studies['s3']}/series"
        "?includefield=0008103E%2C00080021%2C00080031%2C0020000D",
        timeout=30,
    )
    assert response.status_code == 200
    (answer,) = response.json()
    assert _value(answer, "0008103E") == "MR series" and "00080021" in answer


def test_includefield_keywords_repeated_and_missing(corpus: Corpus) -> None:
    params = [
        ("PatientID", "P1"),
        ("includefield", "InstitutionName"),
        ("includefield", "StudyDescription,00180050"),
    ]
    (answer,) = _get(corpus, "/studies", params).json()
    assert _value(answer, "00080080") == "General Hospital"
    assert _value(answer, "00081030") == "Head CT"
    assert answer["00180050"] == {"vr": "DS"}, "asked for but absent: returned empty"


def test_includefield_all(corpus: Corpus) -> None:
    (answer,) = _get(corpus, "/studies", {"PatientID": "P1", "includefield": "all"}).json()
    assert _value(answer, "00080080") == "General Hospital"
    (instance,) = _get(
        corpus, "/instances", {"SOPInstanceUID": corpus.sops["s2-cr"][0], "includefield": "all"}
    ).json()
    assert _value(instance, "00280100") == 16 and "7FE00010" not in instance


# --- limit and offset -------------------------------------------------------------------------


def test_limit_and_offset_page_through_every_study_once(corpus: Corpus) -> None:
    pages = [
        _get(corpus, "/studies", {"limit": "2", "offset": str(offset)}).json() for offset in (0, 2, 4, 6)
    ]
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    seen = [a["0020000D"]["Value"][0] for page in pages for a in page]
    assert sorted(seen) == sorted(corpus.studies.values())


def test_limit_above_the_server_maximum_is_clipped_with_a_warning(tmp_path: Path, database_url: str) -> None:
    archive = make_archive(tmp_path, database_url, qido_max_limit=2)
    try:
        for _ in range(3):
            archive.ingest.store_stream(io.BytesIO(part10(make_instance())))
        running = BackgroundServer(create_app(archive)).start()
        try:
            url = f"{running.url}/dicomweb/studies"
            clipped = httpx.get(url, params={"limit": "50"}, timeout=30)
            assert len(clipped.json()) == 2
            assert (
                clipped.headers["Warning"].startswith("299 ") and "maximum of 2" in clipped.headers["Warning"]
            )
            default = httpx.get(url, timeout=30)
            assert len(default.json()) == 2 and "Warning" not in default.headers
            assert "Warning" not in httpx.get(url, params={"limit": "2"}, timeout=30).headers
        finally:
            running.stop()
    finally:
        archive.close()


# --- keys the index cannot match; malformed values --------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"PatientAge": "030Y"},
        {"00101010": "030Y"},
        {"RequestAttributesSequence.ScheduledProcedureStepID": "SPS1"},
        {"00400275.00400009": "SPS1"},
        {"Modality": "CT"},
    ],
)
def test_unsupported_keys_are_ignored_with_a_warning(corpus: Corpus, params: dict[str, str]) -> None:
    response = _get(corpus, "/studies", params)
    assert response.status_code == 200
    assert _labels(corpus, response.json()) == set(STUDIES)
    assert response.headers["Warning"].startswith('299 imagebridge "')
    assert "ignored" in response.headers["Warning"]


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        ("/studies", {"StudyDate": "20201301"}, "date"),
        ("/studies", {"StudyDate": "2020-13-01"}, "YYYYMMDD"),
        ("/studies", {"StudyDate": "yesterday"}, "date"),
        ("/studies", {"StudyDate": "20201231-20200101"}, "ends before"),
        ("/studies", {"StudyDate": "-"}, "range"),
        ("/studies", {"StudyTime": "2500"}, "time"),
        ("/studies", {"StudyInstanceUID": "abc"}, "UID"),
        ("/studies", {"StudyInstanceUID": "1.2.3,x.y"}, "UID"),
        ("/studies", {"limit": "-1"}, "limit"),
        ("/studies", {"limit": "abc"}, "limit"),
        ("/studies", {"offset": "1.5"}, "offset"),
        ("/studies", {"fuzzymatching": "maybe"}, "fuzzymatching"),
        ("/studies", {"NoSuchKeyword": "x"}, "NoSuchKeyword"),
        ("/studies", {"RequestAttributesSequence.NoSuchKeyword": "x"}, "NoSuchKeyword"),
        ("/studies", {"includefield": "NoSuchKeyword"}, "includefield"),
        ("/series", {"SeriesNumber": "two"}, "integer"),
        ("/instances", {"InstanceNumber": "1.5"}, "integer"),
        ("/studies", [("PatientID", "P1"), ("PatientID", "P2")], "more than once"),
    ],
)
def test_malformed_values_are_400_with_a_reason(corpus: Corpus, path: str, params: Any, reason: str) -> None:
    response = _get(corpus, path, params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status"] == 400 and reason in body["error"]


def test_values_are_never_sql(corpus: Corpus) -> None:
    for value in ("' OR '1'='1", "P1' --", "x'); DROP TABLE patients; --", '"; SELECT 1; --', "\\"):
        assert _studies(corpus, PatientID=value) == set()
        assert _studies(corpus, PatientName=value) == set()
        assert _studies(corpus, PatientName=value, fuzzymatching="true") == set()
    assert _studies(corpus) == set(STUDIES)


def test_no_match_is_200_and_an_empty_array(corpus: Corpus) -> None:
    response = _get(corpus, "/studies", {"PatientID": "nobody"})
    assert response.status_code == 200 and response.json() == []
    assert response.headers["content-type"].startswith("application/dicom+json")
    assert _get(corpus, "/studies/1.2.3.4/series").json() == []
