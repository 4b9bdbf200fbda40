"""Typed errors of the device layer.

Every error carewatch raises on bad input derives from :class:`CarewatchError`, so that
a runtime loop can catch one root, count the fault, set the input aside and go on.
"""

from __future__ import annotations


class CarewatchError(Exception):
    """Root of every error carewatch raises on purpose."""


class ConfigError(CarewatchError):
    """A configuration or profile file is wrong.

    ``path`` is the location inside the file (``devices[2].profile``), ``file`` the file.
    """

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None):
        self.file = file
        self.path = path
        where = ":".join(p for p in (file, path) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.message = message


class ProfileError(ConfigError):
    """A device profile is malformed or names something that does not exist."""


class EventError(CarewatchError):
    """An Event (or a batch of Events) does not match the contract."""


class TopicError(CarewatchError):
    """A topic does not belong to the carewatch tree or has a malformed level."""


class DecodeError(CarewatchError):
    """Raw input from a device could not be turned into values.

    ``device`` names the device (or profile when the device is not known yet) and
    ``fault`` is a short machine-readable reason used as a counter label
    (``checksum``, ``truncated``, ``oversized``, ``type``, ``range``, ``json``,
    ``unknown_message``...).
    """

    def __init__(self, device: str, fault: str, detail: str):
        self.device = device
        self.fault = fault
        self.detail = detail
        super().__init__(f"{device}: {fault}: {detail}")


class EncodeError(CarewatchError):
    """Values could not be encoded into a raw frame (simulators, tests)."""
