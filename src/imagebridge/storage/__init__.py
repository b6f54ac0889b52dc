"""Blob stores: where the bytes of each instance live, exactly as received."""

from imagebridge.storage.base import BlobStore, Spool
from imagebridge.storage.fs import FileBlobStore

__all__ = ["BlobStore", "FileBlobStore", "Spool"]
