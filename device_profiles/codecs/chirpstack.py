"""Alarm pendants over LoRaWAN, as a ChirpStack v4 network server publishes their uplinks.

ChirpStack v4's MQTT integration publishes every de-duplicated uplink on
``application/<applicationId>/device/<devEui>/event/up`` as the JSON mapping of its
``integration.UplinkEvent`` protobuf message (field names in lowerCamelCase, bytes as
base64, 64-bit EUIs as lowercase hex strings)::

    {
      "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
      "time": "2024-05-06T08:31:12.123456+00:00",
      "deviceInfo": {
        "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242", "tenantName": "ChirpStack",
        "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97", "applicationName": "care",
        "deviceProfileId": "...", "deviceProfileName": "oem-lorawan-pendant",
        "deviceName": "pendant-12", "devEui": "0101010101010101", "tags": {}
      },
      "devAddr": "00189440", "adr": true, "dr": 5, "fCnt": 17, "fPort": 10,
      "confirmed": false, "data": "AgAAAwA=",
      "rxInfo": [{"gatewayId": "0016c001f153a14c", "uplinkId": 4217, "rssi": -57,
                  "snr": 10.5, "context": "..."}],
      "txInfo": {"frequency": 868100000, "modulation": {"lora": {...}}}
    }

``data`` (the FRMPayload) carries one CWPL/1 message (:mod:`.pendant_payload`): the same
bytes the RF pendant puts inside its radio frame, minus that framing, because LoRaWAN
brings its own address (DevEUI), counter (``fCnt``) and integrity (MIC, checked by the
network server). ``fCnt`` takes the role of the message counter, so a QoS-1 redelivery or a
repeated publish of the same uplink is dropped by :meth:`track` as a duplicate.
Impact windows go up as ``impact_packed`` fragments when the profile says
``impact.encoding: packed`` (about half the uplinks of raw int16 fragments); a profile's
impact fragments must fit the largest EU868 FRMPayload, 242 bytes (checked at load).

Reading.source is the DevEUI (``codec_options.chirpstack.source: dev_eui``, default) or
the ChirpStack device name (``device_name``), so the agent can map it to a device.

Faults: a topic outside that pattern (``topic``), a payload that is not JSON (``json``),
not an object or with wrongly typed essentials (``type``), no DevEUI (``missing``), a
DevEUI that disagrees with the topic (``mismatch``), bad base64 (``encoding``), an
``fPort`` the profile does not use (``unknown_message``), and every CWPL/1 fault.
Metadata is lenient: an unreadable ``time`` or ``rxInfo`` is logged and ignored (the
gateway's receive time is used), so a press is never lost to a metadata quirk. Unknown
fields are logged at warning, never rejected. Events other than ``up`` (join, status,
ack, txack, log, location, integration) decode to no readings.

Proto3's JSON mapping may leave out fields at their default value: a missing ``fCnt`` is
0 and a missing ``fPort`` (or port 0) is a MAC-only uplink without application data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from device_profiles.codecs.base import MqttMessage, Raw, Reading, unknown_fields
from device_profiles.codecs.pendant_payload import IMPACT_HEADER_SIZE, PendantCodecBase
from device_profiles.errors import DecodeError, EncodeError, ProfileError
from device_profiles.events import MAX_TIME_MS, MIN_TIME_MS, Value
from device_profiles.profiles import Profile

log = logging.getLogger(__name__)

__all__ = ["MAX_FRM_PAYLOAD", "UPLINK_TOPIC_FILTER", "ChirpStackPendantCodec", "uplink_topic"]

#: Subscription that receives every ChirpStack v4 device event of every application.
UPLINK_TOPIC_FILTER = "application/+/device/+/event/+"

_EUI_RE = re.compile(r"^[0-9a-fA-F]{16}$")
_UPLINK_KEYS = frozenset(
    {
        "deduplicationId",
        "time",
        "deviceInfo",
        "devAddr",
        "adr",
        "dr",
        "fCnt",
        "fPort",
        "confirmed",
        "data",
        "object",
        "rxInfo",
        "txInfo",
        "relayRxInfo",
        "joinServerContext",
        "regionConfigId",
    }
)
_DEVICE_INFO_KEYS = frozenset(
    {
        "tenantId",
        "tenantName",
        "applicationId",
        "applicationName",
        "deviceProfileId",
        "deviceProfileName",
        "deviceName",
        "devEui",
        "deviceClassEnabled",
        "tags",
    }
)
_DEFAULT_TENANT = "52f14cd4-c6f1-4fbd-8f87-4025e1d49242"
_DEFAULT_APPLICATION = "17c82e96-be03-4f38-aef3-f83d48582d97"
_DEFAULT_GATEWAY = "0016c001f153a14c"
_MAX_FCNT = (1 << 32) - 1
#: Largest FRMPayload of any EU868 data rate (DR5-DR7, no MAC commands in FOpts).
MAX_FRM_PAYLOAD = 242


def uplink_topic(application_id: str, dev_eui: str, event: str = "up") -> str:
    """``application/<app>/device/<devEui>/event/<event>`` (ChirpStack v4)."""
    return f"application/{application_id}/device/{dev_eui.lower()}/event/{event}"


def _int_field(device: str, doc: Mapping[str, Any], key: str, hi: int) -> int:
    value = doc.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(device, "type", f"{key}: expected an integer, got {value!r}")
    if not 0 <= value <= hi:
        raise DecodeError(device, "range", f"{key}={value} outside [0, {hi}]")
    return value


def _time_ms(device: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            ts = None
        if ts is not None and ts.tzinfo is not None:
            ms = round(ts.timestamp() * 1000)
            if MIN_TIME_MS <= ms <= MAX_TIME_MS:  # else a gateway without time sync
                return ms
    log.warning("%s: unreadable uplink time %r ignored", device, value)
    return None


def _radio(device: str, rx_info: Any) -> dict[str, Value]:
    """Best RSSI / SNR over the receiving gateways (link-quality telemetry)."""
    if rx_info is None:
        return {}
    if not isinstance(rx_info, list):
        log.warning("%s: rxInfo is not a list; ignored", device)
        return {}
    rssi: list[int] = []
    snr: list[float] = []
    for rx in rx_info:
        if not isinstance(rx, dict):
            continue
        r, s = rx.get("rssi"), rx.get("snr")
        if isinstance(r, int) and not isinstance(r, bool):
            rssi.append(r)
        if isinstance(s, int | float) and not isinstance(s, bool):
            snr.append(float(s))
    out: dict[str, Value] = {}
    if rssi:
        out["rssi"] = max(rssi)
    if snr:
        out["snr"] = max(snr)
    return out


class ChirpStackPendantCodec(PendantCodecBase):
    """CWPL/1 pendant messages in ChirpStack v4 ``event/up`` JSON (LoRaWAN)."""

    name = "chirpstack_pendant"
    protocols = frozenset({"chirpstack-v4"})
    transport_options = frozenset({"chirpstack"})
    counter_modulus = 1 << 32  # LoRaWAN 32-bit FCntUp

    def __init__(self, profile: Profile):
        super().__init__(profile)
        imp = self.layout.impact
        spf = imp.samples_per_fragment
        for key, size in (
            ("max_fragment_bytes", imp.max_fragment_bytes),
            ("samples_per_fragment", None if spf is None else 1 + IMPACT_HEADER_SIZE + 6 * spf),
        ):
            if size is not None and size > MAX_FRM_PAYLOAD:
                raise ProfileError(
                    f"makes {size}-byte impact fragments; a LoRaWAN uplink carries at most "
                    f"{MAX_FRM_PAYLOAD} bytes of FRMPayload (EU868 DR5-DR7, without FOpts)",
                    file=profile.source,
                    path=f"codec_options.impact.{key}",
                )
        path = "codec_options.chirpstack"
        raw = profile.codec_options.get("chirpstack", {})
        if not isinstance(raw, Mapping):
            raise ProfileError("must be a mapping", file=profile.source, path=path)
        bad = sorted(set(raw) - {"fport", "source"})
        if bad:
            raise ProfileError(
                f"unknown key(s) {bad}; allowed: fport, source", file=profile.source, path=path
            )
        fport = raw.get("fport", 10)
        if isinstance(fport, bool) or not isinstance(fport, int) or not 1 <= fport <= 223:
            raise ProfileError(
                f"must be an application port 1-223, got {fport!r}",
                file=profile.source,
                path=f"{path}.fport",
            )
        source = raw.get("source", "dev_eui")
        if source not in ("dev_eui", "device_name"):
            raise ProfileError(
                f"must be 'dev_eui' or 'device_name', got {source!r}",
                file=profile.source,
                path=f"{path}.source",
            )
        self.fport: int = fport
        self.source_field: str = source
        names = profile.resource_names
        self._radio_values: frozenset[str] = frozenset(k for k in ("rssi", "snr") if k in names)

    def decode(self, raw: Raw, device: str) -> list[Reading]:
        """Decode one ChirpStack v4 MQTT message; DecodeError names the fault."""
        if not isinstance(raw, MqttMessage):
            raise DecodeError(device, "type", "expected an MQTT message")
        parts = raw.topic.split("/")
        if (
            len(parts) != 6
            or parts[0] != "application"
            or parts[2] != "device"
            or parts[4] != "event"
        ):
            raise DecodeError(
                device, "topic", f"{raw.topic!r} is not application/<app>/device/<devEui>/event/<e>"
            )
        if parts[5] != "up":
            log.debug("%s: ChirpStack %s event ignored", device, parts[5])
            return []
        try:
            doc = msgspec.json.decode(raw.payload)
        except (msgspec.DecodeError, RecursionError) as exc:
            # Very deep nesting raises RecursionError: garbage like any other.
            raise DecodeError(device, "json", str(exc)) from None
        if not isinstance(doc, dict):
            raise DecodeError(
                device, "type", f"uplink must be a JSON object, got {type(doc).__name__}"
            )
        unknown_fields(device, doc, _UPLINK_KEYS)
        info = doc.get("deviceInfo")
        if info is None:
            raise DecodeError(device, "missing", "no deviceInfo")
        if not isinstance(info, dict):
            raise DecodeError(device, "type", "deviceInfo must be an object")
        unknown_fields(device, info, _DEVICE_INFO_KEYS)
        dev_eui = info.get("devEui")
        if dev_eui is None:
            raise DecodeError(device, "missing", "no deviceInfo.devEui")
        if not isinstance(dev_eui, str) or not _EUI_RE.match(dev_eui):
            raise DecodeError(device, "type", f"devEui {dev_eui!r} is not 16 hex digits")
        dev_eui = dev_eui.lower()
        if dev_eui != parts[3].lower():
            raise DecodeError(device, "mismatch", f"devEui {dev_eui} but topic says {parts[3]}")
        name = info.get("deviceName")
        if name is not None and not isinstance(name, str):
            raise DecodeError(device, "type", "deviceInfo.deviceName must be a string")
        if self.source_field == "device_name":
            if not name:
                raise DecodeError(device, "missing", "no deviceInfo.deviceName")
            source = name
        else:
            source = dev_eui
        fcnt = _int_field(device, doc, "fCnt", _MAX_FCNT)
        fport = _int_field(device, doc, "fPort", 255)
        data = doc.get("data", "")
        if not isinstance(data, str):
            raise DecodeError(device, "type", "data must be a base64 string")
        if fport == 0:
            log.debug("%s: MAC-only uplink (fPort 0) ignored", device)
            return []
        if fport != self.fport:
            raise DecodeError(
                device, "unknown_message", f"fPort {fport}; this pendant uses {self.fport}"
            )
        try:
            payload = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DecodeError(device, "encoding", f"data is not base64: {exc}") from None
        time = _time_ms(device, doc.get("time"))
        readings = self.decode_message(payload, device, counter=fcnt, source=source, time=time)
        radio: dict[str, Value] = {
            k: v for k, v in _radio(device, doc.get("rxInfo")).items() if k in self._radio_values
        }
        if radio:
            readings = [
                Reading(r.reading, {**r.values, **radio}, r.time, r.urgent, r.source)
                if r.reading == "status"
                else r
                for r in readings
            ]
        return readings

    def encode(self, reading: Reading, device: str) -> MqttMessage:
        """An ``event/up`` message for a decoded-form reading (``counter`` is the fCnt)."""
        source = reading.source if reading.source is not None else device
        if self.source_field == "dev_eui" or _EUI_RE.match(source):
            return self.uplink(reading, dev_eui=source, device_name=device)
        return self.uplink(reading, dev_eui=_eui_for(source), device_name=source)

    def uplink(
        self,
        reading: Reading,
        *,
        dev_eui: str,
        device_name: str | None = None,
        application_id: str = _DEFAULT_APPLICATION,
        application_name: str = "carewatch",
        tenant_id: str = _DEFAULT_TENANT,
        gateway_id: str = _DEFAULT_GATEWAY,
        rssi: int = -80,
        snr: float = 7.5,
        deduplication_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> MqttMessage:
        """Build the ChirpStack v4 uplink event ChirpStack would publish for ``reading``.

        ``reading.time`` (ms UTC) becomes ``time`` when set; ``extra`` adds or replaces
        top-level fields (tests of unknown fields, simulators of newer servers).
        """
        if not _EUI_RE.match(dev_eui):
            raise EncodeError(f"devEui {dev_eui!r} is not 16 hex digits")
        dev_eui = dev_eui.lower()
        fcnt = reading.values.get("counter", 0)
        if isinstance(fcnt, bool) or not isinstance(fcnt, int) or not 0 <= fcnt <= _MAX_FCNT:
            raise EncodeError(f"counter (fCnt) must be a 32-bit unsigned integer, got {fcnt!r}")
        payload = self.encode_message(reading)
        dedup = deduplication_id or _uuid_like(f"{dev_eui}:{fcnt}:{payload.hex()}")
        doc: dict[str, Any] = {"deduplicationId": dedup}
        if reading.time is not None:
            stamp = datetime.fromtimestamp(reading.time / 1000, tz=UTC).isoformat()
            doc["time"] = stamp.replace("+00:00", "Z")
        doc["deviceInfo"] = {
            "tenantId": tenant_id,
            "tenantName": "ChirpStack",
            "applicationId": application_id,
            "applicationName": application_name,
            "deviceProfileId": _uuid_like(self.profile.name),
            "deviceProfileName": self.profile.name,
            "deviceName": device_name or dev_eui,
            "devEui": dev_eui,
            "deviceClassEnabled": "CLASS_A",
            "tags": {},
        }
        doc.update(
            {
                "devAddr": dev_eui[-8:],
                "adr": True,
                "dr": 5,
                "fCnt": fcnt,
                "fPort": self.fport,
                "confirmed": reading.reading == "press",
                "data": base64.b64encode(payload).decode("ascii"),
                "rxInfo": [
                    {
                        "gatewayId": gateway_id,
                        "uplinkId": fcnt & 0xFFFF,
                        "rssi": rssi,
                        "snr": snr,
                        "channel": 0,
                        "location": {},
                        "context": "AAAAAA==",
                        "crcStatus": "CRC_OK",
                    }
                ],
                "txInfo": {
                    "frequency": 868100000,
                    "modulation": {
                        "lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}
                    },
                },
            }
        )
        if extra:
            doc.update(extra)
        return MqttMessage(uplink_topic(application_id, dev_eui), msgspec.json.encode(doc))


def _uuid_like(seed: str) -> str:
    h = hashlib.blake2b(seed.encode(), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _eui_for(name: str) -> str:
    return hashlib.blake2b(name.encode(), digest_size=8).hexdigest()
