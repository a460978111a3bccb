"""End to end against the real update server (gunicorn over TLS, device tokens): a device
provisioned with v1 updates to v3, commits it, and its reports reach the server's audit."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.ota_device import PASSPHRASE, Lab

pytest.importorskip("repository.server")


def test_update_through_gunicorn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from repository.devices import add_device
    from repository.layout import RepoPaths
    from repository.server.requestlog import read_request_log, request_log_path
    from tests.helpers.gunicorn import run_gunicorn

    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    lab = Lab.create(tmp_path)
    v1 = lab.publish("1.0.0", counter=1)
    lab.publish("2.0.0", counter=1)
    v3 = lab.publish("3.0.0", counter=2, size=1024 * 1024)
    lab.publish("9.0.0", hwid="model-y", counter=2)
    paths = RepoPaths(lab.repo_dir.resolve())
    token = add_device(paths, "dev-g1", "model-x")
    with run_gunicorn(
        lab.repo_dir, cert=lab.tls.server_cert, key=lab.tls.server_key, ca_cert=lab.tls.ca_cert
    ) as server:
        dev = lab.device("dev-g1", url=server.url, token=token)
        dev.slots["A"].write_bytes(lab.published[v1])
        dev.run("provision", "--slot", "A", "--target", v1, check=True)
        assert dev.json("update")["target"] == v3
        assert dev.slots["B"].read_bytes() == lab.published[v3]
        assert dev.json("boot")["committed"]
        assert dev.json("check")["update_available"] is False
        # another model's firmware: the client's policy refuses it before any download
        refused = dev.run("update", "--target", "firmware/model-y/fw-9.0.0.bin")
        assert refused.returncode == 1
        assert refused.stderr == (
            "ota-client: error: refused firmware/model-y/fw-9.0.0.bin: "
            "built for model-y, this device is model-x\n"
        )
        assert dev.status()["reports_queued"] == 0
    audit = read_request_log(request_log_path(paths.private))
    reports = [r for r in audit if r.get("event") == "report"]
    assert [
        (r["device"], r.get("device_event"), r["installed_version"], r["result"]) for r in reports
    ] == [("dev-g1", "install", "1.0.0", "installed"), ("dev-g1", "commit", "3.0.0", "committed")]
