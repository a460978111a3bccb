"""The firmware contract and device policy: strict parsing, fail closed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from tuf.api.metadata import TargetFile

from client.errors import (
    FirmwareFormatError,
    NotNewerError,
    SecurityCounterError,
    WrongHardwareError,
)
from client.firmware import Firmware, check_policy, parse_version


def _target(path: str = "firmware/model-x/fw-1.4.2.bin", **fields: Any) -> TargetFile:
    fw: dict[str, Any] = {"version": "1.4.2", "hardware_ids": ["model-x"], "security_counter": 3}
    fw.update(fields)
    fw = {k: v for k, v in fw.items() if v is not None}
    tf = TargetFile.from_data(path, b"image", ["sha256"])
    tf.unrecognized_fields["custom"] = {"firmware": fw}
    return tf


@pytest.mark.parametrize(
    ("text", "expected"), [("1", (1,)), ("1.4.2", (1, 4, 2)), ("0.0.10", (0, 0, 10))]
)
def test_versions(text: str, expected: tuple[int, ...]) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1.",
        ".1",
        "1..2",
        "01.2",
        "1.2-rc1",
        "v1",
        "1.2.3.4.5.6.7.8.9",
        " 1",
        "1e3",
        1,
        None,
        "\uff11.\uff12",
    ],
)  # fullwidth digits
def test_malformed_versions(text: object) -> None:
    with pytest.raises(FirmwareFormatError):
        parse_version(text)


def test_integer_tuple_ordering() -> None:
    assert parse_version("1.10.0") > parse_version("1.9.9")
    assert parse_version("2") < parse_version("2.0.1")


def test_parse_good_target() -> None:
    fw = Firmware.from_target(_target(deltas={"1.4.1": "firmware/model-x/fw-1.4.1-to-1.4.2.delta"}))
    assert (fw.version, fw.hardware_ids, fw.security_counter) == ((1, 4, 2), ("model-x",), 3)
    assert fw.deltas == {"1.4.1": "firmware/model-x/fw-1.4.1-to-1.4.2.delta"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": None}, "malformed version None"),
        ({"hardware_ids": []}, "hardware_ids must be a non-empty list"),
        ({"hardware_ids": "model-x"}, "hardware_ids must be a non-empty list"),
        ({"hardware_ids": ["../x"]}, "hardware_ids must be a non-empty list"),
        ({"security_counter": -1}, "security_counter must be a non-negative integer"),
        ({"security_counter": True}, "security_counter must be a non-negative integer"),
        ({"security_counter": 1.0}, "security_counter must be a non-negative integer"),
        ({"security_counter": None}, "security_counter must be a non-negative integer"),
        ({"deltas": ["1.4.1"]}, "deltas must map versions to target paths"),
        ({"deltas": {"x": "firmware/a"}}, "malformed version 'x'"),
        ({"version": "1.4.3"}, "file name does not carry the version 1.4.3"),
    ],
    ids=[
        "no-version",
        "empty-hwids",
        "hwids-string",
        "hwid-chars",
        "negative-counter",
        "bool-counter",
        "float-counter",
        "no-counter",
        "deltas-list",
        "delta-version",
        "name-mismatch",
    ],
)
def test_malformed_targets(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(FirmwareFormatError, match=re.escape(message)):
        Firmware.from_target(_target(**kwargs))


@pytest.mark.parametrize(
    "path",
    [
        "firmware/model-x/fw-1.4.2.img",
        "firmware/fw-1.4.2.bin",
        "other/model-x/fw-1.4.2.bin",
        "firmware/model-x/-1.4.2.bin",
        "firmware/model-x/..%2f..%2fpwned-fw-1.4.2.bin",
        "firmware/model-x/..\\pwned-fw-1.4.2.bin",
        "firmware/../fw-1.4.2.bin",
        "firmware/model-x/.fw-1.4.2.bin",
        "firmware//fw-1.4.2.bin",
        "firmware/model x/fw-1.4.2.bin",
    ],
)
def test_bad_paths(path: str) -> None:
    with pytest.raises(FirmwareFormatError):
        Firmware.from_target(_target(path))


def test_no_custom_field() -> None:
    tf = TargetFile.from_data("firmware/model-x/fw-1.4.2.bin", b"x", ["sha256"])
    with pytest.raises(FirmwareFormatError, match=r"no custom\.firmware object"):
        Firmware.from_target(tf)


def test_policy() -> None:
    fw = Firmware.from_target(_target())
    check_policy(fw, hardware_id="model-x", installed=(1, 4, 1), security_counter=3)
    check_policy(fw, hardware_id="model-x", installed=None, security_counter=0)
    with pytest.raises(WrongHardwareError, match="built for model-x, this device is model-y"):
        check_policy(fw, hardware_id="model-y", installed=(1,), security_counter=0)
    with pytest.raises(NotNewerError, match=r"1\.4\.2 is not newer than the installed 1\.4\.2"):
        check_policy(fw, hardware_id="model-x", installed=(1, 4, 2), security_counter=0)
    with pytest.raises(NotNewerError):
        check_policy(fw, hardware_id="model-x", installed=(1, 10), security_counter=0)
    with pytest.raises(SecurityCounterError, match="security counter 3 is below the device's 4"):
        check_policy(fw, hardware_id="model-x", installed=(1,), security_counter=4)


def test_only_this_models_folder_speaks_for_it() -> None:
    """An image in model-y's folder claiming to fit model-x too (model-y's publisher key is not
    model-x's) is refused on model-x."""
    fw = Firmware.from_target(
        _target("firmware/model-y/fw-1.4.2.bin", hardware_ids=["model-x", "model-y"])
    )
    check_policy(fw, hardware_id="model-y", installed=None, security_counter=0)
    with pytest.raises(WrongHardwareError, match="published outside firmware/model-x/"):
        check_policy(fw, hardware_id="model-x", installed=None, security_counter=0)
