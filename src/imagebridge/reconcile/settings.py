"""Settings of import sources and of the matching (``[import_sources.NAME]``, ``[reconciliation]``)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator, model_validator

from imagebridge.reconcile.coerce import valid_prefix
from imagebridge.reconcile.score import DEFAULT_WEIGHTS, FIELDS, Scorecard, Weight


class ImportSourceSetting(BaseModel):
    """Where outside studies come from: the issuer that qualifies its Patient IDs, an accession prefix."""

    model_config = {"extra": "forbid"}

    issuer: str = Field(min_length=1, max_length=64)
    accession_prefix: str | None = None

    @field_validator("accession_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        return None if value is None else valid_prefix(value)


class FieldWeightSetting(BaseModel):
    model_config = {"extra": "forbid"}

    agree: float = Field(ge=0)
    disagree: float = Field(default=0.0, le=0)


def _default_weights() -> dict[str, FieldWeightSetting]:
    return {k: FieldWeightSetting(agree=w.agree, disagree=w.disagree) for k, w in DEFAULT_WEIGHTS.items()}


class ReconciliationSettings(BaseModel):
    """The scorecard and its thresholds, the deterministic identifiers, and outside-study retention."""

    model_config = {"extra": "forbid"}

    match_above: float = 70.0
    different_below: float = 63.0
    weights: dict[str, FieldWeightSetting] = Field(default_factory=_default_weights)
    name_close: float = Field(default=0.85, ge=0, le=1)
    birth_date_near: float = Field(default=0.4, ge=0, le=1)
    deterministic_issuers: list[str] = Field(
        default_factory=list,
        description="Issuers whose identifiers (e.g. a health card number) in Other Patient IDs Sequence "
        "identify a person: an equal identifier links without looking at demographics.",
    )
    outside_retention_days: int = Field(default=90, ge=1)
    modifying_system: str = Field(default="IMAGEBRIDGE", min_length=1, max_length=64)

    @field_validator("weights")
    @classmethod
    def _known_fields(cls, value: dict[str, FieldWeightSetting]) -> dict[str, FieldWeightSetting]:
        unknown = sorted(set(value) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown scorecard fields {unknown}; known: {list(FIELDS)}")
        return {**_default_weights(), **value}

    @model_validator(mode="after")
    def _ordered(self) -> ReconciliationSettings:
        if self.different_below > self.match_above:
            raise ValueError("different_below must not be above match_above")
        return self

    def scorecard(self) -> Scorecard:
        return Scorecard(
            weights={k: Weight(w.agree, w.disagree) for k, w in self.weights.items()},
            match_above=self.match_above,
            different_below=self.different_below,
            name_close=self.name_close,
            birth_date_near=self.birth_date_near,
        )
