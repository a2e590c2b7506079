"""Typed errors for everything a user can get wrong when handing us a photo.

Each error carries a stable machine-readable ``code`` (used by the HTTP API and by job items, so
never rename one) and a human message. They subclass ``ValueError`` so that callers that only
know "bad input" can still catch them all at once.
"""

from __future__ import annotations


class FaceInputError(ValueError):
    """A photo that cannot give a face; ``code`` names the reason for machines."""

    code: str = "bad_input"


class EmptyFile(FaceInputError):
    """The upload has zero bytes."""

    code = "empty_file"


class NotAnImage(FaceInputError):
    """The bytes are not in any image format we read."""

    code = "not_an_image"


class UnreadableImage(FaceInputError):
    """The file claims an image format but is truncated or corrupt."""

    code = "unreadable_image"


class ImageTooLarge(FaceInputError):
    """Too many pixels (decompression bombs included) or too many bytes."""

    code = "image_too_large"


class NoFace(FaceInputError):
    """The detector found no face at all."""

    code = "no_face"


class FaceTooSmall(FaceInputError):
    """Faces were found, but all below the minimum size the caller asked for."""

    code = "face_too_small"


class SeveralFaces(FaceInputError):
    """Several faces where the caller's policy demands exactly one."""

    code = "several_faces"
