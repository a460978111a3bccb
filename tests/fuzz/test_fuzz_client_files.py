"""Fuzzing the device's own inputs: its configuration file and its state files.

* A configuration (random TOML documents grown from a valid one, and random bytes) either loads
  or is refused with `ConfigError`; as a process, `ota-client` answers one line and exit 1.
* A state file corrupted on the medium (random bytes, truncation, a valid JSON of the wrong
  shape) never bricks the device: `ota-client boot` still comes up on a slot whose image
  verifies against a release. The device here has two committed-and-verified images (1.0.0 in
  A, 2.0.0 in B, active B), so "the last verified slot" always exists.

The boot runs in-process (the real `client.boot` code, for speed), plus one subprocess check.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from client.config import ClientConfig, load_config
from client.errors import ConfigError
from tests.attacks.toolkit.device import BIN, LabDevice, client_env
from tests.attacks.toolkit.server import AttackServer
from tests.attacks.toolkit.simulator import RepositorySimulator, firmware_path
from tests.helpers.certs import make_tls

# Bounded and fast; no shrinking (a known-failing case must not spend a minute shrinking).
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- configuration ---------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "device_id": "dev-1",
    "hardware_id": "model-x",
    "data_dir": "data",
    "trusted_root": "root.json",
    "server": {
        "metadata_url": "https://127.0.0.1:1/metadata/",
        "targets_url": "https://127.0.0.1:1/targets/",
        "read_timeout": 5.0,
    },
    "slots": {"A": "a.img", "B": "b.img"},
    "boot": {"max_tries": 2, "health_check": ["/bin/true"]},
}

scalars = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.sampled_from(
        [
            "",
            "..",
            "/",
            "https://",
            "http://127.0.0.1/",
            "A",
            "B",
            "../../etc",
            "uboot",
            "file",
            "\x00",
            "model-x/../y",
            "-1",
            "1e999",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=8,
)

shallow_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(st.text(max_size=8), scalars, max_size=4),
)


def toml_key(key: str) -> str:
    return json.dumps(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(doc: dict[str, Any]) -> str:
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in doc.items())


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    doc = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(1, 4))):
        table = draw(st.sampled_from([None, "server", "slots", "boot"]))
        target = doc if table is None or not isinstance(doc.get(table), dict) else doc[table]
        action = draw(st.sampled_from(["drop", "set", "add"]))
        keys = sorted(target)
        if action == "drop" and keys:
            target.pop(draw(st.sampled_from(keys)))
        elif action == "set" and keys:
            target[draw(st.sampled_from(keys))] = draw(values)
        else:
            target[draw(st.text(min_size=1, max_size=12))] = draw(values)
    return doc


@FUZZ
@given(doc=mutated_configs())
def test_fuzz_config_documents(
    tmp_path_factory: pytest.TempPathFactory, doc: dict[str, Any]
) -> None:
    """Any TOML document: a valid `ClientConfig` or a `ConfigError`, never anything else."""
    path = tmp_path_factory.mktemp("cfg") / "ota-client.toml"
    text = to_toml(doc)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        pass  # still a fine input: the client must refuse it cleanly
    path.write_text(text, encoding="utf-8")
    try:
        config = load_config(path)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e).strip()
        return
    assert isinstance(config, ClientConfig)
    assert config.slots["A"] != config.slots["B"]
    assert config.server.metadata_url.startswith("https://")


@FUZZ
@given(data=st.binary(max_size=300))
def test_fuzz_config_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "ota-client.toml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError:
        return


@pytest.mark.parametrize(
    "text",
    [
        b"\xff\xfe not utf-8",
        b"device_id = [1, 2",
        to_toml({**BASE, "slots": {"A": "same.img", "B": "same.img"}}).encode(),
        to_toml({**BASE, "server": {**BASE["server"], "metadata_url": "http://plain/"}}).encode(),
        to_toml({**BASE, "boot": {"max_tries": 0}}).encode(),
    ],
    ids=["not-utf8", "not-toml", "same-slot", "plain-http", "zero-tries"],
)
def test_bad_config_is_one_line_and_exit_1(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "ota-client.toml"
    path.write_bytes(text)
    proc = subprocess.run(
        [str(BIN / "ota-client"), "--config", str(path), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env=client_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ota-client: error: "), proc.stderr


# -- state files -------------------------------------------------------------------------------


class TwoSlotDevice:
    def __init__(self, device: LabDevice, pristine: Path, images: dict[str, bytes]):
        self.device = device
        self.pristine = pristine
        self.images = images  # version -> image bytes

    def __repr__(self) -> str:
        return f"TwoSlotDevice({self.device.folder})"

    def restore(self) -> None:
        shutil.rmtree(self.device.data_dir)
        shutil.copytree(self.pristine, self.device.data_dir, symlinks=True)


@pytest.fixture(scope="module")
def two_slots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoSlotDevice]:
    folder = tmp_path_factory.mktemp("state-fuzz")
    tls = make_tls(folder / "tls")
    sim = RepositorySimulator(("model-x",))
    v1 = sim.add_firmware("model-x", "1.0.0", counter=1)
    sim.publish()
    server = AttackServer(sim, tls.server_cert, tls.server_key).start()
    try:
        dev = LabDevice.create(
            folder / "dev",
            server_url=server.url,
            ca_cert=tls.ca_cert,
            trusted_root=sim.history["root"][1],
        )
        dev.provision(v1, sim.images[v1])
        sim.add_firmware("model-x", "2.0.0", counter=1)
        sim.publish()
        assert dev.ok("update")["slot"] == "B"
        assert dev.ok("boot")["committed"] is True
        dev.run("check")  # leave a complete metadata cache and a few log records
    finally:
        server.stop()
    pristine = folder / "pristine-data"
    shutil.copytree(dev.data_dir, pristine, symlinks=True)
    images = {v: sim.images[firmware_path("model-x", v)] for v in ("1.0.0", "2.0.0")}
    yield TwoSlotDevice(dev, pristine, images)


def boot_in_process(dev: LabDevice) -> tuple[str, str]:
    from client.boot import boot
    from client.device import Device

    device = Device(load_config(dev.config_path))
    try:
        result = boot(device)
    finally:
        device.close()
    return result.slot, result.version


def corruptions() -> st.SearchStrategy[tuple[str, Any]]:
    return st.one_of(
        st.tuples(st.just("bytes"), st.binary(max_size=200)),
        st.tuples(st.just("truncate"), st.floats(0.0, 0.99)),
        st.tuples(st.just("json"), shallow_values),
        st.tuples(st.just("flip"), st.tuples(st.integers(0, 10**6), st.integers(1, 255))),
    )


def corrupt(path: Path, how: tuple[str, Any]) -> None:
    kind, arg = how
    data = path.read_bytes() if path.exists() else b""
    if kind == "bytes":
        new = arg
    elif kind == "truncate":
        new = data[: int(len(data) * arg)]
    elif kind == "json":
        new = json.dumps(arg).encode()
    else:
        offset, xor = arg
        if not data:
            return
        buf = bytearray(data)
        buf[offset % len(buf)] ^= xor
        new = bytes(buf)
    path.write_bytes(new)
    path.chmod(0o600)


STATE_FILES = [
    "state.json",
    "state.json.bak",
    "bootctl.json",
    "bootctl.json.bak",
    "download.json",
    "events.log",
    "metadata/timestamp.json",
    "metadata/snapshot.json",
]


@pytest.mark.parametrize("name", STATE_FILES)
@FUZZ
@given(how=corruptions())
def test_fuzz_corrupted_state_file_never_bricks(
    two_slots: TwoSlotDevice, name: str, how: tuple[str, Any]
) -> None:
    """After any corruption of one state file, boot comes up on the last verified slot (B,
    2.0.0), whose bytes equal the published image of the version it reports."""
    two_slots.restore()
    dev = two_slots.device
    corrupt(dev.data_dir / name, how)
    slot, version = boot_in_process(dev)
    assert version in two_slots.images, version
    assert dev.slot_holds(slot, two_slots.images[version]), (slot, version)
    assert (slot, version) == ("B", "2.0.0")  # the last verified slot, not merely a verified one


def test_corrupted_state_boots_as_a_process(two_slots: TwoSlotDevice) -> None:
    """The same through the real command line, with one copy of every state file (and the
    event log, the resume record and the metadata cache) damaged at once."""
    two_slots.restore()
    dev = two_slots.device
    for name in (
        "state.json",
        "bootctl.json.bak",
        "events.log",
        "download.json",
        "metadata/timestamp.json",
        "metadata/snapshot.json",
    ):
        corrupt(dev.data_dir / name, ("bytes", b"\x00garbage{"))
    result = dev.ok("boot")
    assert dev.slot_holds(result["slot"], two_slots.images[result["version"]])
    assert result["version"] == "2.0.0"  # the last verified (committed) slot, not the older one
