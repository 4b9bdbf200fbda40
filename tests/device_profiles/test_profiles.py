"""Profile loading: every shipped profile is valid; faults name the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from device_profiles.codecs import CODECS, codec_for
from device_profiles.errors import ProfileError
from device_profiles.profiles import (
    ProfileRegistry,
    builtin_profile_dir,
    load_profile_file,
    parse_profile,
)

MINIMAL: dict[str, Any] = {
    "profile": "acme-door",
    "kind": "door",
    "protocol": "zigbee2mqtt",
    "codec": "zigbee2mqtt",
    "report_interval_s": 3600,
    "resources": [{"name": "battery", "type": "int", "unit": "%", "min": 0, "max": 100}],
}


def write(tmp_path: Path, data: Any, name: str = "acme-door") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_every_shipped_profile_loads_and_binds_to_its_codec() -> None:
    registry = ProfileRegistry.load()
    names = registry.names()
    assert names, "no profiles shipped"
    for profile in registry:
        assert profile.codec in CODECS, f"{profile.source}: unknown codec {profile.codec}"
        codec = codec_for(profile)
        assert codec.profile is profile
    kinds = {p.kind for p in registry}
    assert {"pendant", "door", "footfall", "face_terminal"} <= kinds, kinds


def test_minimal_profile_parses(tmp_path: Path) -> None:
    profile = load_profile_file(write(tmp_path, MINIMAL))
    assert profile.name == "acme-door"
    assert profile.resource("battery").in_range(100)
    assert not profile.resource("battery").in_range(101)
    assert not profile.resource("battery").in_range(float("nan"))
    with pytest.raises(ProfileError, match="no resource 'x'"):
        profile.resource("x")


def test_loaded_profile_is_immutable(tmp_path: Path) -> None:
    profile = load_profile_file(write(tmp_path, {**MINIMAL, "transport": {"a": {"b": [1]}}}))
    with pytest.raises(TypeError):
        profile.transport["a"] = 2  # type: ignore[index]
    assert profile.transport["a"]["b"] == (1,)


@pytest.mark.parametrize(
    ("change", "path_part"),
    [
        ({"protocol": "carrier-pigeon"}, "protocol"),
        ({"report_interval_s": 0}, "report_interval_s"),
        ({"report_interval_s": "often"}, "report_interval_s"),
        ({"kind": ""}, "kind"),
        ({"resources": []}, "resources"),
        ({"resources": [{"name": "b", "type": "complex"}]}, "resources[0].type"),
        ({"resources": [{"name": "b", "type": "int", "min": 5, "max": 1}]}, "resources[0]"),
        ({"resources": [{"name": "b", "type": "int", "colour": 1}]}, "resources[0]"),
        (
            {"resources": [{"name": "b", "type": "int"}, {"name": "b", "type": "int"}]},
            "resources[1].name",
        ),
        ({"transport": [1, 2]}, "transport"),
        ({"colour": "red"}, "unknown key"),
    ],
)
def test_faults_name_file_and_key(tmp_path: Path, change: dict[str, Any], path_part: str) -> None:
    path = write(tmp_path, {**MINIMAL, **change})
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    assert str(path) in str(info.value)
    assert path_part in str(info.value)


def test_missing_key_and_bad_yaml(tmp_path: Path) -> None:
    data = dict(MINIMAL)
    del data["codec"]
    with pytest.raises(ProfileError, match="codec: missing required key"):
        load_profile_file(write(tmp_path, data))
    bad = tmp_path / "broken.yaml"
    bad.write_text("profile: [unclosed", encoding="utf-8")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile_file(bad)
    with pytest.raises(ProfileError, match="mapping at the top level"):
        parse_profile(["a"], source="x.yaml")


def test_name_must_match_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="must equal the file name"):
        load_profile_file(write(tmp_path, MINIMAL, name="other-name"))


def test_unknown_codec_is_named(tmp_path: Path) -> None:
    profile = load_profile_file(write(tmp_path, {**MINIMAL, "codec": "nope"}))
    with pytest.raises(ProfileError, match="codec: unknown codec 'nope'"):
        codec_for(profile)


def test_registry_overrides_and_unknown_names(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL)
    registry = ProfileRegistry.load(tmp_path, builtin=False)
    assert registry.names() == ["acme-door"]
    assert "acme-door" in registry
    with pytest.raises(ProfileError, match=r"unknown profile 'x'; known: \['acme-door'\]"):
        registry.get("x")
    with pytest.raises(ProfileError, match="does not exist"):
        ProfileRegistry.load(tmp_path / "missing")


def test_builtin_dir_is_inside_the_package() -> None:
    assert builtin_profile_dir().is_dir()
