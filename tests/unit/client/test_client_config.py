"""Configuration parsing: every setting typed and checked, relative paths resolved."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from client.config import load_config
from client.errors import ConfigError

GOOD = """
device_id = "dev-1"
hardware_id = "model-x"
data_dir = "data"
trusted_root = "root.json"

[server]
metadata_url = "https://ota.example/metadata/"
targets_url = "https://ota.example/targets/"
ca_bundle = "ca.pem"
token_file = "/etc/ota/token"

[slots]
A = "/dev/mmcblk0p2"
B = "/dev/mmcblk0p3"

[boot]
max_tries = 2
health_check = ["/usr/bin/health", "--quick"]

[agent]
interval = 60
jitter = 5
"""


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "ota-client.toml"
    path.write_text(text)
    return load_config(path)


def test_good_config(tmp_path: Path) -> None:
    config = _load(tmp_path, GOOD)
    assert config.device_id == "dev-1"  # type: ignore[attr-defined]
    assert config.data_dir == tmp_path / "data"  # type: ignore[attr-defined]
    assert config.trusted_root == tmp_path / "root.json"  # type: ignore[attr-defined]
    assert config.server.token_file == Path("/etc/ota/token")  # type: ignore[attr-defined]
    assert config.slots["B"] == Path("/dev/mmcblk0p3")  # type: ignore[attr-defined]
    assert config.boot.health_check == ("/usr/bin/health", "--quick")  # type: ignore[attr-defined]
    assert config.boot.backend == "file"  # type: ignore[attr-defined]
    assert config.agent.interval == 60.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'metadata_url = "https://',
            'metadata_url = "http://',
            "server.metadata_url must be an https:// URL",
        ),
        ('device_id = "dev-1"', 'device_id = "dev 1"', "device_id must match"),
        ('device_id = "dev-1"', "", "missing required setting device_id"),
        ("max_tries = 2", "max_tries = 0", "boot.max_tries must be at least 1"),
        ("max_tries = 2", "max_tries = 11", "boot.max_tries must be at most 10"),
        ("max_tries = 2", "max_tries = 1000000", "boot.max_tries must be at most 10"),
        ("max_tries = 2", 'max_tries = "2"', "boot.max_tries has the wrong type (str)"),
        ("max_tries = 2", "max_tries = true", "boot.max_tries must not be a boolean"),
        ('B = "/dev/mmcblk0p3"', 'B = "/dev/mmcblk0p2"', "slots.A and slots.B must be different"),
        ("[agent]", "[agent]\nbogus = 1", "unknown setting agent.bogus"),
        (
            'health_check = ["/usr/bin/health", "--quick"]',
            'health_check = "/usr/bin/health"',
            "boot.health_check has the wrong type",
        ),
        (
            'token_file = "/etc/ota/token"',
            'client_cert = "c.pem"',
            "server.client_cert and server.client_key go together",
        ),
        ("max_tries = 2", 'backend = "grub"', "boot.backend must be 'file' or 'uboot'"),
    ],
    ids=[
        "http-url",
        "bad-id",
        "missing",
        "zero-tries",
        "eleven-tries",
        "a-million-tries",
        "string-number",
        "bool-number",
        "same-slots",
        "unknown",
        "argv-string",
        "cert-without-key",
        "backend",
    ],
)
def test_bad_settings(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, GOOD.replace(old, new))
    assert message in str(e.value)


@pytest.mark.parametrize("tries", [1, 10], ids=["fewest", "most"])
def test_max_tries_bounds_are_accepted(tmp_path: Path, tries: int) -> None:
    path = tmp_path / "ota-client.toml"
    path.write_text(GOOD.replace("max_tries = 2", f"max_tries = {tries}"))
    assert load_config(path).boot.max_tries == tries


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        _load(tmp_path, "a = = 1")


NUMBERS = {
    "server": [
        "connect_timeout",
        "read_timeout",
        "max_download_seconds",
        "min_rate_bytes",
        "min_rate_grace_seconds",
    ],
    "boot": ["max_tries", "health_timeout"],
    "agent": ["interval", "jitter", "max_backoff"],
}
KEYS = [f"{table}.{key}" for table, keys in NUMBERS.items() for key in keys]


def _with(table: str, line: str) -> str:
    key = line.split(" ", 1)[0]
    text = re.sub(rf"(?m)^{key} = .*\n", "", GOOD)
    return text.replace(f"[{table}]\n", f"[{table}]\n{line}\n")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan", "1e300", "-1", "10000000000"])
@pytest.mark.parametrize("name", KEYS)
def test_every_number_is_finite_and_in_range(tmp_path: Path, name: str, value: str) -> None:
    """`nan` passed every `value < minimum` check and `inf` every maximum: each number is
    refused unless finite and within its stated range, naming the key."""
    table, key = name.split(".")
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, _with(table, f"{key} = {value}"))
    message = str(e.value)
    assert message.startswith(f"{name} "), message
    assert "\n" not in message and len(message) < 200, message


@pytest.mark.parametrize("name", [k for k in KEYS if k != "boot.max_tries"])
def test_range_ends_are_accepted(tmp_path: Path, name: str) -> None:
    from client.config import RANGES

    table, key = name.split(".")
    for end in RANGES[name]:
        value = int(end) if name == "server.min_rate_bytes" else float(end)
        config = _load(tmp_path, _with(table, f"{key} = {value!r}"))
        assert getattr(getattr(config, table), key) == value


@pytest.mark.parametrize(
    "url",
    [
        "https://user:s3cret@ota.example/metadata/",
        "https://user@ota.example/metadata/",
        "https://:s3cret@ota.example/metadata/",
        "https://ota.example@evil.example/metadata/",
    ],
    ids=["user-password", "user", "password", "host-as-user"],
)
@pytest.mark.parametrize("key", ["metadata_url", "targets_url", "reports_url"])
def test_urls_with_userinfo_are_refused_without_echoing_them(
    tmp_path: Path, key: str, url: str
) -> None:
    text = re.sub(rf"(?m)^{key} = .*\n", "", GOOD)
    text = text.replace("[server]\n", f'[server]\n{key} = "{url}"\n')
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, text)
    assert str(e.value).startswith(f"server.{key} must not carry a user name or password")
    assert "s3cret" not in str(e.value) and "evil" not in str(e.value)


@pytest.mark.parametrize(
    "url", ["https:///metadata/", "https://ota.example:99999/", "https://ota .example/"]
)
def test_urls_without_a_valid_host_are_refused(tmp_path: Path, url: str) -> None:
    text = GOOD.replace('metadata_url = "https://ota.example/metadata/"', f'metadata_url = "{url}"')
    with pytest.raises(ConfigError, match=r"server\.metadata_url is not a valid URL"):
        _load(tmp_path, text)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "too-large"])
def test_configuration_must_be_a_bounded_regular_file(tmp_path: Path, kind: str) -> None:
    import os

    from client.config import MAX_CONFIG_BYTES

    path = {"fifo": tmp_path / "fifo", "dev-zero": Path("/dev/zero"), "directory": tmp_path}.get(
        kind, tmp_path / "large.toml"
    )
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "too-large":
        path.write_text(GOOD + "#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError, match=f"configuration {path} is "):
        load_config(path)
