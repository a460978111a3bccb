"""Fuzzing what the device receives: random bytes in place of any metadata file or the image,
and validly signed firmware targets whose `custom.firmware` fields are random.

The real device code runs in-process (`client.update.update`, for speed) against the attacker's
HTTPS server. Whatever arrives, the device either refuses with one of its own errors
(`UpdateError`, never an internal error) or installs an image that is genuinely acceptable:
signed by model-x's publisher, well-formed, for model-x, newer than 1.0.0 and not below the
security counter (and it does install those: fail closed, but not closed to good images).
The committed slot is never touched.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from client.config import load_config
from client.errors import UpdateError
from tests.attacks.toolkit.device import LabDevice, sha256
from tests.attacks.toolkit.server import AttackServer, serve_bytes
from tests.attacks.toolkit.simulator import RepositorySimulator, firmware_path, image
from tests.helpers.certs import make_tls

FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
V1 = firmware_path("model-x", "1.0.0")
_VERSION = re.compile(r"^(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,7}$")


class World:
    """One repository, one attacker server, one device; restored before every example."""

    def __init__(
        self, folder: Path, sim: RepositorySimulator, server: AttackServer, dev: LabDevice
    ):
        self.folder, self.sim, self.server, self.dev = folder, sim, server, dev
        self.pristine = folder / "pristine"
        shutil.copytree(dev.data_dir, self.pristine / "data", symlinks=True)
        self.slot_a = dev.slots["A"].read_bytes()

    def __repr__(self) -> str:
        return f"World({self.folder})"

    def restore(self) -> None:
        shutil.rmtree(self.dev.data_dir)
        shutil.copytree(self.pristine / "data", self.dev.data_dir, symlinks=True)
        self.dev.slots["B"].unlink(missing_ok=True)
        self.server.calm()

    def update(self) -> dict[str, Any] | None:
        """`ota-client update` in-process; None when the device refused (UpdateError)."""
        from client.device import Device
        from client.update import update

        device = Device(load_config(self.dev.config_path))
        try:
            return update(device).to_json()
        except UpdateError:
            return None
        finally:
            device.close()

    def assert_committed_slot_untouched(self) -> None:
        assert sha256(self.dev.slots["A"].read_bytes()) == sha256(self.slot_a)
        status = self.dev.status()
        assert (status["active_slot"], status["installed_version"]) == ("A", "1.0.0")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("network-fuzz")
    tls = make_tls(folder / "tls")
    sim = RepositorySimulator(("model-x",))
    sim.add_firmware("model-x", "1.0.0", counter=1)
    sim.publish()
    server = AttackServer(sim, tls.server_cert, tls.server_key).start()
    try:
        dev = LabDevice.create(
            folder / "dev",
            server_url=server.url,
            ca_cert=tls.ca_cert,
            trusted_root=sim.history["root"][1],
        )
        dev.provision(V1, sim.images[V1])
        yield World(folder, sim, server, dev)
    finally:
        server.stop()


# -- random bytes from the network ---------------------------------------------------------------

WHERE = [
    "metadata/timestamp.json",
    "metadata/*.snapshot.json",
    "metadata/*.targets.json",
    "metadata/*.firmware-model-x.json",
    "metadata/2.root.json",
    "targets/*",
]


@st.composite
def network_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["random", "json-ish", "flipped-genuine"]))
    if kind == "random":
        return draw(st.binary(max_size=2000))
    if kind == "json-ish":
        return draw(
            st.sampled_from(
                [
                    b"{}",
                    b"[]",
                    b"null",
                    b'{"signed": {}, "signatures": []}',
                    b'{"signed": {"_type": "timestamp", "version": 99}}',
                    b"\xef\xbb\xbf{}",
                    b"{" * 5000,
                ]
            )
        )
    return b"FLIP"  # replaced by a flipped copy of the genuine file in the test


@FUZZ
@given(where=st.sampled_from(WHERE), data=network_bytes(), offset=st.integers(0, 10**6))
def test_fuzz_network_bytes(world: World, where: str, data: bytes, offset: int) -> None:
    world.restore()
    release = world.sim.fork()
    release.add_firmware("model-x", "2.0.0", counter=1)
    release.publish()
    world.server.repo = release
    if data == b"FLIP":
        genuine = next(
            (
                v
                for k, v in sorted(release.files.items())
                if re.fullmatch(where.replace(".", r"\.").replace("*", ".*"), k)
            ),
            b"x",
        )
        body = bytearray(genuine)
        body[offset % len(body)] ^= 0x41
        data = bytes(body)
    world.server.attack(where, serve_bytes(data))
    result = world.update()
    if result is not None and result["result"] == "installed":
        # only possible when the change did not touch what the device installs
        assert world.dev.slot_holds(result["slot"], release.images[result["target"]])
    world.assert_committed_slot_untouched()
    world.server.repo = world.sim


# -- validly signed, malformed firmware fields ---------------------------------------------------

field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2**64),  # canonical JSON has no floats
    st.text(max_size=20),
    st.sampled_from(
        [
            "2.0.0",
            "1.0.0",
            "1.0.0.1",
            "02.0.0",
            "2.0",
            "10",
            "2.0.0-rc1",
            " 2.0.0",
            "2..0",
            "model-x",
            "model-y",
            "",
            "9" * 12,
        ]
    ),
    st.lists(st.sampled_from(["model-x", "model-y", "", 1, None, "MODEL-X"]), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)


@st.composite
def firmware_fields(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "version": "2.0.0",
        "hardware_ids": ["model-x"],
        "security_counter": 1,
    }
    for name in draw(
        st.lists(
            st.sampled_from(["version", "hardware_ids", "security_counter", "deltas", "extra"]),
            max_size=3,
            unique=True,
        )
    ):
        if draw(st.booleans()):
            fields.pop(name, None)
        else:
            fields[name] = draw(field_values)
    return fields


def acceptable(fields: dict[str, Any], path: str) -> bool:
    """The oracle: what a device at 1.0.0 (counter 1) of model-x may install."""
    version, hwids, counter = (
        fields.get(k) for k in ("version", "hardware_ids", "security_counter")
    )
    return (
        isinstance(version, str)
        and bool(_VERSION.match(version))
        and tuple(int(p) for p in version.split(".")) > (1, 0, 0)
        and path.endswith(f"-{version}.bin")
        and isinstance(hwids, list)
        and "model-x" in hwids
        and all(isinstance(h, str) and h for h in hwids)
        and type(counter) is int
        and 1 <= counter <= 2**63 - 1
        and _deltas_ok(fields.get("deltas", {}))
    )


def _deltas_ok(deltas: Any) -> bool:
    return isinstance(deltas, dict) and all(
        isinstance(k, str) and _VERSION.match(k) and isinstance(v, str) for k, v in deltas.items()
    )


@FUZZ
@given(
    fields=firmware_fields(),
    custom_shape=st.sampled_from(["firmware", "bare", "list"]),
    name_version=st.sampled_from(["2.0.0", "3.0.0", "1.0.0"]),
)
@example(
    fields={"version": "2.0.0", "hardware_ids": ["model-x"], "security_counter": 1},
    custom_shape="firmware",
    name_version="2.0.0",
)
@example(
    fields={
        "version": "3.0.0",
        "hardware_ids": ["model-y", "model-x"],
        "security_counter": 7,
        "deltas": {"1.0.0": "firmware/model-x/d.delta"},
    },
    custom_shape="firmware",
    name_version="3.0.0",
)
def test_fuzz_signed_firmware_fields(
    world: World, fields: dict[str, Any], custom_shape: str, name_version: str
) -> None:
    world.restore()
    release = world.sim.fork()
    path = firmware_path("model-x", name_version)
    custom: Any = (
        {"firmware": fields}
        if custom_shape == "firmware"
        else (fields if custom_shape == "bare" else [fields])
    )
    release.add_target("firmware-model-x", path, image(name_version, salt="fuzz"), custom)
    release.publish()
    world.server.repo = release
    result = world.update()
    installed = result is not None and result["result"] == "installed"
    # installed exactly when acceptable: no malformed field slips through, no good one is lost
    assert installed == (custom_shape == "firmware" and acceptable(fields, path)), (fields, result)
    if installed:
        assert world.dev.slot_holds(result["slot"], release.images[path])
    world.assert_committed_slot_untouched()
    world.server.repo = world.sim
