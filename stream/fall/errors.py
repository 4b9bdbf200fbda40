"""Typed errors of the fall classifier (all under :class:`CarewatchError`)."""

from __future__ import annotations

from device_profiles.errors import CarewatchError


class FallError(CarewatchError):
    """Root of the fall classifier's errors."""


class FallDataError(FallError):
    """A recordings file (SisFall npz format) or an impact window is malformed."""


class ModelError(FallError):
    """A fall model file is missing, unreadable or inconsistent."""


class ModelVersionError(ModelError):
    """A fall model was built for another format, feature set or library version.

    ``what`` names the mismatching item (``format_version``, ``feature_version``,
    ``scikit-learn``...), ``expected`` what this code needs and ``found`` what the model
    declares.
    """

    def __init__(self, what: str, expected: str, found: str, detail: str = "") -> None:
        self.what = what
        self.expected = expected
        self.found = found
        msg = f"fall model {what} mismatch: model has {found!r}, this code needs {expected!r}"
        super().__init__(f"{msg}; {detail}" if detail else msg)
