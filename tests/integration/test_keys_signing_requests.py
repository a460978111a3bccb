"""Signing requests through the real `ota-repo`: listing have/need, signing here and on another
machine, and every bad input refused with one line, nothing published and nothing recorded."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.ceremony import Ceremony, production_repo, use_passphrase
from tests.helpers.repo import (
    assert_one_line_error,
    cli_env,
    content_hash,
    ota_repo,
    published,
    sign_request,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ceremony, str]:
    """One production repository with a staged 'add dave to root' request; tests get copies."""
    mp = pytest.MonkeyPatch()
    use_passphrase(mp)
    ceremony = production_repo(tmp_path_factory.mktemp("requests-template"))
    ceremony.new_key("dave")
    ceremony.new_key("stranger")
    mp.undo()
    proc = ota_repo(ceremony.repo_dir, "rotate", "root", "--add-key", str(ceremony.pub("dave")))
    assert "root key added" in proc.stdout
    return ceremony, _pending(ceremony)[0]["id"]  # type: ignore[return-value]


@pytest.fixture
def c(template: tuple[Ceremony, str], tmp_path: Path) -> Ceremony:
    shutil.copytree(template[0].repo_dir, tmp_path / "repo")
    return Ceremony(tmp_path / "repo", template[0].keys_dir)


def _stage_add_dave(c: Ceremony) -> str:
    """The id of the template's staged request (read from the staging folder)."""
    (path,) = (c.repo_dir / ".ota" / "staging").glob("*.json")
    return path.stem


def _pending(c: Ceremony) -> list[dict[str, object]]:
    data = json.loads(ota_repo(c.repo_dir, "requests", "--json").stdout)
    return data["requests"]  # type: ignore[no-any-return]


def _state(c: Ceremony) -> tuple[dict[str, str], str, bytes]:
    staged = sorted((c.repo_dir / ".ota" / "staging").glob("*.json"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in staged)).hexdigest()
    return published(c.repo_dir), digest, (c.repo_dir / ".ota" / "config.json").read_bytes()


def test_requests_show_have_need_and_missing_keys_until_published(c: Ceremony) -> None:
    req_id = _stage_add_dave(c)
    (req,) = _pending(c)
    assert req["ready"] is False
    thresholds = {t["label"]: t for t in req["thresholds"]}  # type: ignore[attr-defined]
    previous, new = thresholds["root v1 (previous)"], thresholds["root v2 (new)"]
    assert (previous["have"], previous["need"]) == (0, 2)
    assert c.key("dave").keyid in new["missing"]
    sign_request(c.repo_dir, req_id, c.uri("alice"))
    proc = ota_repo(c.repo_dir, "publish", req_id, check=False)
    assert_one_line_error(proc, "not enough signatures", "root v1 (previous) has 1/2")
    sign_request(c.repo_dir, req_id, c.uri("carol"))
    assert _pending(c)[0]["ready"] is True
    ota_repo(c.repo_dir, "publish", req_id)
    assert _pending(c) == []
    assert (c.repo_dir / "metadata" / "2.root.json").exists()
    ota_repo(c.repo_dir, "verify")
    audit = (c.repo_dir / ".ota" / "audit.log").read_text()
    assert req_id in audit


def test_sign_exported_file_on_a_machine_without_the_repository(
    c: Ceremony, tmp_path: Path
) -> None:
    req_id = _stage_add_dave(c)
    usb = tmp_path / "usb" / "req.json"
    ota_repo(c.repo_dir, "request", "export", req_id, str(usb))
    elsewhere = tmp_path / "bobs-laptop"
    elsewhere.mkdir()
    pinned = elsewhere / "pinned-root.json"  # the copy bob keeps from the first ceremony
    shutil.copy(c.repo_dir / "metadata" / "1.root.json", pinned)
    trusted = ("--trusted-root", str(pinned))
    proc = ota_repo(elsewhere, "request", "show", str(usb), check=False)
    assert_one_line_error(proc, "--trusted-root")
    shown = ota_repo(elsewhere, "request", "show", str(usb), *trusted)
    assert "root key added" in shown.stdout
    for holder in ("bob", "dave"):
        sign_request(elsewhere, str(usb), c.uri(holder), *trusted)
    proc = ota_repo(c.repo_dir, "request", "import", str(usb))
    assert "imported 2 signature(s)" in proc.stdout
    sign_request(c.repo_dir, req_id, c.uri("alice"))
    ota_repo(c.repo_dir, "publish", req_id)


def _tamper_content(path: Path) -> None:
    data = json.loads(path.read_text())
    data["changes"][0]["metadata"]["signed"]["roles"]["root"]["threshold"] = 1
    path.write_text(json.dumps(data))


def _tamper_signature(path: Path) -> None:
    data = json.loads(path.read_text())
    sig = data["changes"][0]["metadata"]["signatures"][0]
    sig["sig"] = ("0" if sig["sig"][0] != "0" else "1") + sig["sig"][1:]
    path.write_text(json.dumps(data))


def _tamper_role(path: Path) -> None:
    data = json.loads(path.read_text())
    data["changes"][0]["role"] = "no-such-role"
    path.write_text(json.dumps(data))


def _not_json(path: Path) -> None:
    path.write_text("{not json")


@pytest.mark.parametrize(
    "tamper,message",
    [
        (_tamper_content, "content was changed"),
        (_tamper_signature, "does not verify"),
        (_tamper_role, "root metadata where no-such-role was expected"),
        (_not_json, "not a valid signing request"),
    ],
    ids=["content-changed", "signature-changed", "role-renamed", "not-json"],
)
def test_tampered_request_file_is_refused_and_records_nothing(
    c: Ceremony, tmp_path: Path, tamper: Callable[[Path], None], message: str
) -> None:
    req_id = _stage_add_dave(c)
    usb = tmp_path / "req.json"
    ota_repo(c.repo_dir, "request", "export", req_id, str(usb))
    pinned = str(c.repo_dir / "metadata" / "1.root.json")
    sign_request(tmp_path, str(usb), c.uri("bob"), "--trusted-root", pinned)
    tamper(usb)
    before = _state(c)
    proc = ota_repo(c.repo_dir, "request", "import", str(usb), check=False)
    assert_one_line_error(proc, message)
    assert _state(c) == before


def test_tampered_staged_request_is_refused_at_publish(c: Ceremony) -> None:
    req_id = _stage_add_dave(c)
    for holder in ("alice", "bob", "dave"):
        sign_request(c.repo_dir, req_id, c.uri(holder))
    _tamper_content(c.repo_dir / ".ota" / "staging" / f"{req_id}.json")
    before = published(c.repo_dir)
    proc = ota_repo(c.repo_dir, "publish", req_id, check=False)
    assert_one_line_error(proc, "does not match its id")
    assert published(c.repo_dir) == before


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["sign", "{id}", "--key", "{stranger}", "--expect", "{hash}"],
            "is not listed for root: refused",
        ),
        (
            ["sign", "{id}", "--key", "encfile:{keys}/missing.key", "--expect", "{hash}"],
            "key file not found",
        ),
        (["sign", "{id}", "--key", "{alice}"], "--expect HASH"),
        (["sign", "{id}", "--key", "{alice}", "--expect", "{wrong}"], "does not match --expect"),
        (["sign", "no-such-request", "--key", "{alice}"], "no pending signing request"),
        (["rotate", "no-such-role", "--add-key", "{dave_pub}"], "unknown role 'no-such-role'"),
        (["renew", "no-such-role"], "unknown role 'no-such-role'"),
        (["revoke", "no-such-role"], "unknown role 'no-such-role'"),
        (["renew", "targets", "--days", "3651"], "limits.max_expiry_days"),
        (["renew", "root", "--days", "9" * 30], "limits.max_expiry_days"),
        (["rotate", "root", "--threshold", "5"], "threshold 5 must be between 1 and its 3"),
        (["rotate", "root", "--threshold", "1"], "--allow-single-root-key"),
        (["rotate", "root", "--add-key", "{alice_pub}"], "already a key of that role"),
        (["rotate", "root", "--remove-key", "ffffffffff"], "no single key 'ffffffffff'"),
        (
            [
                "delegate",
                "fw-x",
                "--paths",
                "firmware/x/*",
                "--key",
                "{dave_pub}",
                "--threshold",
                "2",
            ],
            "threshold 2 must be between 1 and its 1",
        ),
        (
            ["delegate", "fw-x", "--paths", "/etc/*", "--key", "{dave_pub}"],
            "bad path pattern /etc/*",
        ),
        (["delegate", "root", "--paths", "a/*", "--key", "{dave_pub}"], "bad role name root"),
        (["rotate", "snapshot", "--add-key", "{dave_pub}"], "needs exactly one key and its --uri"),
        (["publish", "../../metadata/1.root"], "cannot read request file"),
        (["sign", "../no-such-request", "--key", "{alice}"], "cannot read request file"),
    ],
    ids=[
        "key-not-listed",
        "missing-key-file",
        "no-expected-hash",
        "wrong-expected-hash",
        "unknown-request",
        "rotate-unknown-role",
        "renew-unknown-role",
        "revoke-unknown-role",
        "renew-past-the-expiry-limit",
        "renew-overflowing-days",
        "threshold-above-keys",
        "single-root-key",
        "key-twice",
        "remove-unknown-key",
        "delegation-threshold-above-keys",
        "absolute-pattern",
        "top-level-name",
        "online-key-without-uri",
        "request-path-traversal",
        "sign-missing-file",
    ],
)
def test_bad_input_one_line_nothing_published_or_recorded(
    c: Ceremony, args: list[str], message: str
) -> None:
    req_id = _stage_add_dave(c)
    subst = {
        "{id}": req_id,
        "{hash}": content_hash(c.repo_dir, req_id),
        "{wrong}": "0" * 64,
        "{stranger}": c.uri("stranger"),
        "{alice}": c.uri("alice"),
        "{keys}": str(c.keys_dir),
        "{dave_pub}": str(c.pub("dave")),
        "{alice_pub}": str(c.pub("alice")),
    }
    argv = []
    for a in args:
        for k, v in subst.items():
            a = a.replace(k, v)
        argv.append(a)
    before = _state(c)
    proc = ota_repo(c.repo_dir, *argv, check=False)
    assert_one_line_error(proc, message)
    assert _state(c) == before


def test_wrong_passphrase_signs_nothing(c: Ceremony, tmp_path: Path) -> None:
    req_id = _stage_add_dave(c)
    wrong = tmp_path / "wrong-passphrase"
    wrong.write_text("not the passphrase\n")
    wrong.chmod(0o600)  # ota-repo refuses a passphrase file others can read
    env = cli_env(OTA_KEY_PASSPHRASE_FILE=str(wrong))
    del env["OTA_KEY_PASSPHRASE"]
    before = _state(c)
    proc = sign_request(c.repo_dir, req_id, c.uri("alice"), env=env, check=False)
    assert_one_line_error(proc, "wrong passphrase")
    assert _state(c) == before


def test_request_made_stale_by_a_newer_version_is_refused(c: Ceremony) -> None:
    first = _stage_add_dave(c)
    ota_repo(c.repo_dir, "renew", "root")
    second = next(r["id"] for r in _pending(c) if r["id"] != first)
    for holder in ("alice", "bob"):
        sign_request(c.repo_dir, second, c.uri(holder))
        sign_request(c.repo_dir, first, c.uri(holder))
    sign_request(c.repo_dir, first, c.uri("dave"))
    ota_repo(c.repo_dir, "publish", second)
    before = published(c.repo_dir)
    listed = {r["id"]: r for r in _pending(c)}
    assert "root v2 was published after this request was made" in str(listed[first]["stale"])
    proc = ota_repo(c.repo_dir, "publish", first, check=False)
    assert_one_line_error(proc, "is stale", "root v2 was published")
    assert published(c.repo_dir) == before
    ota_repo(c.repo_dir, "request", "discard", first)
    assert _pending(c) == []


def test_key_list_shows_every_key_its_roles_and_where_it_lives(c: Ceremony) -> None:
    rows = json.loads(ota_repo(c.repo_dir, "key", "list", "--json").stdout)["keys"]
    by_id = {r["keyid"]: r for r in rows}
    for holder in ("alice", "bob", "carol"):
        row = by_id[c.key(holder).keyid]
        assert row["roles"] == ["root"] and row["signer"] == "offline (not on this machine)"
    assert by_id[c.key("release").keyid]["roles"] == ["targets"]
    online = by_id[c.key("timestamp").keyid]
    assert online["roles"] == ["timestamp"]
    assert online["signer"] == f"file {c.keys_dir / 'timestamp.key'}"
    text = ota_repo(c.repo_dir, "key", "list").stdout
    assert c.key("alice").keyid[:16] in text
