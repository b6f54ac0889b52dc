"""Rendered and thumbnail retrieval (PS3.18 §10.4.1.1.4, §10.4.1.1.5): what to render, then render it."""

from __future__ import annotations

from pydicom.uid import UID

from imagebridge.dicom import pixels, render
from imagebridge.errors import NotAcceptable, NotFound, StorageFailure
from imagebridge.index.lookup import StoredInstance, Target
from imagebridge.services import frames
from imagebridge.storage.base import BlobStore


def representative(instances: list[StoredInstance], target: Target) -> StoredInstance:
    """The instance that stands for a study or series: the middle image of the first series
    that has pixel data."""
    images = [i for i in instances if i.number_of_frames is not None]
    if not images:
        raise NotFound(f"{target.describe()} has no instance with pixel data to render")
    first_series = [i for i in images if i.series_uid == images[0].series_uid]
    return first_series[len(first_series) // 2]


def check_renderable(instance: StoredInstance, number: int) -> None:
    """406 for an instance with no image, or one whose pixel data cannot be decoded here."""
    if instance.number_of_frames is None:
        kind = UID(instance.sop_class_uid).name
        raise NotAcceptable(
            f"instance {instance.sop_uid} ({kind}) has no pixel data; it cannot be rendered as an image"
        )
    frames.check_frames(instance, [number])
    pixels.require_decoder(instance.transfer_syntax)


def rendered(blobs: BlobStore, instance: StoredInstance, number: int, options: render.RenderOptions) -> bytes:
    """Frame ``number`` of ``instance`` as a JPEG or PNG (CPU work: call it off the event loop)."""
    check_renderable(instance, number)
    path = blobs.path(instance.blob_key)
    if path is None:
        raise StorageFailure("this blob store cannot render in place")
    return render.render_frame(path, number, options, instance.transfer_syntax, instance.frame_index)
