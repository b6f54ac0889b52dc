"""The one error tree of imagebridge.

Each surface maps it in exactly one module (HTTP: ``dicomweb/errors.py``;
DIMSE: ``dimse/status.py``)::

    ImageBridgeError
    ├── InvalidInput             the caller sent something we cannot use (HTTP 400)
    │   ├── NotDicom             the bytes are not a DICOM Part 10 object
    │   ├── MissingAttribute     a required attribute (a UID) is absent or empty
    │   └── InvalidQuery         a query parameter is malformed
    ├── NotFound                 no such patient/study/series/instance/frame (HTTP 404)
    ├── Conflict                 the request contradicts what is stored (HTTP 409)
    │   ├── InstanceConflict     a different object already holds this SOP Instance UID
    │   └── StudyMismatch        the instance does not belong to the study named in the URL
    ├── NotAcceptable            no representation fits the Accept header (HTTP 406)
    ├── UnsupportedMediaType     the request body type is not one we read (HTTP 415)
    ├── CannotTranscode          the pixel data cannot be converted as asked (HTTP 406)
    └── StorageFailure           the archive could not write or read durably (HTTP 500/503)
        └── UpstreamUnavailable  a service this one relies on (the EHR) cannot answer now (HTTP 503)
"""

from __future__ import annotations


class ImageBridgeError(Exception):
    """Base of every error imagebridge raises on purpose; ``reason`` is safe to show users."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidInput(ImageBridgeError):
    pass


class NotDicom(InvalidInput):
    pass


class MissingAttribute(InvalidInput):
    pass


class InvalidQuery(InvalidInput):
    pass


class NotFound(ImageBridgeError):
    pass


class Conflict(ImageBridgeError):
    pass


class InstanceConflict(Conflict):
    pass


class NotAuthorizedToStore(ImageBridgeError):
    """The caller's access does not cover this instance's patient or study (STOW-RS, per instance)."""


class StudyMismatch(Conflict):
    pass


class NotAcceptable(ImageBridgeError):
    pass


class UnsupportedMediaType(ImageBridgeError):
    pass


class CannotTranscode(NotAcceptable):
    pass


class StorageFailure(ImageBridgeError):
    pass


class UpstreamUnavailable(StorageFailure):
    """A service the request depends on (integrated mode: the EHR) is unreachable; retry after a while.

    It maps as StorageFailure does (503); ``retry_after`` is sent as ``Retry-After`` (RFC 9110 §10.2.3).
    """

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
