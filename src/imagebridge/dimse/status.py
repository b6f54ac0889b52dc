"""The one mapping of imagebridge's error tree to DIMSE status codes (PS3.7 Annex C, PS3.4).

Each service class has its own codes for the same failure; a failure answer carries
the error's ``reason`` as Error Comment (0000,0902), cut to its 64-character limit.
"""

from __future__ import annotations

import enum
import logging

from pydicom.dataset import Dataset

from imagebridge.errors import (
    CannotTranscode,
    Conflict,
    ImageBridgeError,
    InvalidInput,
    InvalidQuery,
    NotFound,
    StorageFailure,
)

log = logging.getLogger(__name__)

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
PROCESSING_FAILURE = 0x0110
"""PS3.7 §C.4.1: failure of a DIMSE-N operation such as Storage Commitment's N-ACTION."""
MOVE_DESTINATION_UNKNOWN = 0xA801
"""PS3.4 §C.4.2.1.5: Refused, Move Destination unknown."""


class Service(enum.Enum):
    STORE = "C-STORE"
    FIND = "C-FIND"
    MOVE = "C-MOVE"
    GET = "C-GET"


_OUT_OF_RESOURCES = {Service.STORE: 0xA700, Service.FIND: 0xA700, Service.MOVE: 0xA701, Service.GET: 0xA701}
_DOES_NOT_MATCH = 0xA900
"""Data Set / Identifier does not match SOP Class (PS3.4 §B.2.3, §C.4.1.1.4)."""
_CANNOT_UNDERSTAND = 0xC000


def status_for(error: BaseException, service: Service) -> int:
    """The status a failed operation answers with (PS3.4 Tables B.2-1, C.4-1, C.4-2, C.4-3)."""
    if isinstance(error, StorageFailure | OSError | MemoryError):
        return _OUT_OF_RESOURCES[service]
    if isinstance(error, InvalidQuery):
        return _DOES_NOT_MATCH
    if service is Service.STORE and isinstance(error, Conflict):
        return _DOES_NOT_MATCH
    if isinstance(error, InvalidInput | CannotTranscode | NotFound | ImageBridgeError):
        return _CANNOT_UNDERSTAND
    return _CANNOT_UNDERSTAND


def failure(error: BaseException, service: Service) -> Dataset:
    """A status Dataset for pynetdicom: Status plus the reason as Error Comment."""
    answer = Dataset()
    answer.Status = status_for(error, service)
    reason = (
        error.reason if isinstance(error, ImageBridgeError) else f"internal error ({type(error).__name__})"
    )
    answer.ErrorComment = reason[:64]
    return answer


class CommitmentFailure(enum.IntEnum):
    """Failure Reason (0008,1197) values for Storage Commitment (PS3.4 §J.3.3, PS3.3 §C.14)."""

    PROCESSING_FAILURE = 0x0110
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    CLASS_INSTANCE_CONFLICT = 0x0119
