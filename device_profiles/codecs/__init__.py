"""Codec registry: profile ``codec`` names to codec classes, imported on first use.

Lazy imports keep a gateway from loading codecs (and their dependencies) it never uses.
"""

from __future__ import annotations

import importlib

from device_profiles.codecs.base import Codec, MqttMessage, Raw, Reading, StreamCodec
from device_profiles.errors import ProfileError
from device_profiles.profiles import Profile

CODECS: dict[str, str] = {
    "pendant_frame": "device_profiles.codecs.pendant_frame:PendantFrameCodec",
    "chirpstack_pendant": "device_profiles.codecs.chirpstack:ChirpStackPendantCodec",
    "modbus_counter": "device_profiles.codecs.modbus_counter:ModbusCounterCodec",
    "zigbee2mqtt": "device_profiles.codecs.zigbee2mqtt:Zigbee2MqttCodec",
    "face_terminal": "device_profiles.codecs.face_terminal:FaceTerminalCodec",
}

__all__ = [
    "CODECS",
    "Codec",
    "MqttMessage",
    "Raw",
    "Reading",
    "StreamCodec",
    "codec_class",
    "codec_for",
]


def codec_class(name: str) -> type[Codec]:
    """The codec class registered as ``name``; raises ProfileError for unknown names."""
    try:
        target = CODECS[name]
    except KeyError:
        raise ProfileError(f"unknown codec {name!r}; known: {sorted(CODECS)}") from None
    module_name, _, attr = target.partition(":")
    cls: type[Codec] = getattr(importlib.import_module(module_name), attr)
    return cls


def codec_for(profile: Profile) -> Codec:
    """Instantiate (and so validate) the codec a profile names."""
    try:
        cls = codec_class(profile.codec)
    except ProfileError as exc:
        raise ProfileError(exc.message, file=profile.source, path="codec") from None
    return cls(profile)
