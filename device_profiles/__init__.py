"""carewatch device layer: the Event contract, device profiles and pure codecs.

No I/O happens here; edge_agent, stream and simulators all build on this package.
"""

from device_profiles.errors import (
    CarewatchError,
    ConfigError,
    DecodeError,
    EncodeError,
    EventError,
    ProfileError,
    TopicError,
)
from device_profiles.events import Event, decode_batch, decode_event, encode_batch, encode_event
from device_profiles.profiles import Profile, ProfileRegistry, Resource

__all__ = [
    "CarewatchError",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "Event",
    "EventError",
    "Profile",
    "ProfileError",
    "ProfileRegistry",
    "Resource",
    "TopicError",
    "decode_batch",
    "decode_event",
    "encode_batch",
    "encode_event",
]
