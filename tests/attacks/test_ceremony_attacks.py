"""Attacks on the signing ceremony (issue 9), driven through the real `ota-repo` and, where the
original attack reached a device, a real `ota-client`.

The repository is a production one (root holders alice, bob and carol, threshold 2; targets key
`release`; online snapshot and timestamp keys on the server), with firmware 1.0.0 for model-x
and a `model-x` delegation to a publisher. The attackers: a shell on the update server (its
online keys and `.ota/staging`), someone who edits a request file in transit and serves a
mirror, a single root holder, and a publisher holding only their own key (`mallory`). Every
attack is refused: one line, no traceback, the published repository unchanged and the device
still on 1.0.0 with nothing it trusts changed beyond what the online keys may sign.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import TargetFile

from repository import keys
from tests.attacks.toolkit.ceremony_tamper import (
    ESCAPE_SEQUENCES,
    OSC_TITLE,
    RAW_CONTROL,
    FolderSource,
    PublishedRepository,
    add_signature,
    change,
    edit_file,
    evil_image,
    extra_field_copy,
    image,
    key_dict,
    keyid_of,
    load_request,
    mirror_of,
    ota_repo_in,
    ota_repo_tty,
    outcome,
    private_signer,
    publish_behind,
    restage,
    save_request,
    upper_hex_copy,
)
from tests.attacks.toolkit.device import LabDevice
from tests.attacks.toolkit.record import Attempt
from tests.attacks.toolkit.server import AttackServer
from tests.helpers.ceremony import Ceremony, production_repo, use_passphrase
from tests.helpers.certs import TlsFiles
from tests.helpers.repo import (
    PASSPHRASE,
    assert_one_line_error,
    cli_env,
    firmware_custom,
    ota_repo,
    published,
)
from tests.helpers.softhsm import softhsm

V1 = "firmware/model-x/fw-1.0.0.bin"
EVIL = "firmware/model-x/fw-6.6.6.bin"
EVIL_FILES = {EVIL: (evil_image("6.6.6"), firmware_custom("6.6.6", counter=1))}
FAILED_CHECK = {"event": "check", "result": "failed"}
NO_UPDATE = {"event": "check", "result": "no-update"}
# The attacker on the server holds the online keys: what they sign may reach the device.
ONLINE = ("metadata:timestamp.json", "metadata:snapshot.json")
CONTENT_HASH = re.compile(r"content hash: ([0-9a-f]{64})")


# -- the lab ---------------------------------------------------------------------------------------


@dataclass
class Lab:
    """One copy of the prepared repository, its key folder, and a folder for holders' laptops."""

    repo: Path
    keys: Path
    folder: Path

    def uri(self, name: str) -> str:
        return f"encfile:{self.keys / name}.key"

    def pub(self, name: str) -> Path:
        return self.keys / f"{name}.pub"

    def keyid(self, name: str) -> str:
        return keyid_of(key_dict(self.pub(name)))

    def laptop(self, holder: str) -> tuple[Path, Path]:
        """A holder's machine without the repository, and their pinned copy of root v1."""
        folder = self.folder / f"{holder}-laptop"
        folder.mkdir(exist_ok=True)
        pinned = folder / "trusted-root.json"
        shutil.copy(self.repo / "metadata" / "1.root.json", pinned)
        return folder, pinned

    def staged(self) -> set[str]:
        return {p.stem for p in (self.repo / ".ota" / "staging").glob("*.json")}

    def stage(self, *args: str) -> str:
        """Run a command that stages a signing request; return the new request's id."""
        before = self.staged()
        ota_repo(self.repo, *args)
        (new,) = self.staged() - before
        return new


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Ceremony:
    """A production repository with firmware 1.0.0 (listed by targets) and a `model-x`
    delegation (firmware/model-x/*) to a publisher; tests get copies."""
    mp = pytest.MonkeyPatch()
    use_passphrase(mp)
    try:
        c = production_repo(tmp_path_factory.mktemp("ceremony-attacks"))
        for name in ("mallory", "publisher"):
            c.new_key(name)
        src = c.repo_dir.parent / "fw-1.0.0.bin"
        src.write_bytes(image("1.0.0"))
        repo = c.open()
        repo.extra_signers["targets"] = [keys.load_signer(c.uri("release"), c.key("release"))]
        repo.add_targets([(src, V1, firmware_custom("1.0.0", counter=1))])
    finally:
        mp.undo()
    ota_repo(
        c.repo_dir, "delegate", "model-x", "--paths", "firmware/model-x/*",
        "--key", str(c.pub("publisher")), "--sign-with", c.uri("release"),
        "--sign-with", c.uri("publisher"), "--publish",
    )  # fmt: skip
    return c


@pytest.fixture
def lab(template: Ceremony, tmp_path: Path) -> Lab:
    shutil.copytree(template.repo_dir, tmp_path / "repo")
    return Lab(tmp_path / "repo", template.keys_dir, tmp_path)


@dataclass
class Fleet:
    server: AttackServer
    device: LabDevice


@pytest.fixture
def fleet(lab: Lab, tls_files: TlsFiles) -> Iterator[Fleet]:
    """The repository served as it is on disk (what the update server serves), and a model-x
    device provisioned with 1.0.0 that trusts root v1."""
    server = AttackServer(FolderSource(lab.repo), tls_files.server_cert, tls_files.server_key)
    server.start()
    try:
        device = LabDevice.create(
            lab.folder / "device",
            server_url=server.url,
            ca_cert=tls_files.ca_cert,
            trusted_root=(lab.repo / "metadata" / "1.root.json").read_bytes(),
        )
        device.provision(V1, image("1.0.0"))
        yield Fleet(server, device)
    finally:
        server.stop()


# -- helpers ---------------------------------------------------------------------------------------


def reviewed_hash(proc: subprocess.CompletedProcess[str]) -> str:
    """The content hash a review prints on its second line (`request ID` comes first)."""
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("request "), proc.stdout
    found = CONTENT_HASH.fullmatch(lines[1].strip())
    assert found, f"no content hash on the review's second line: {proc.stdout}"
    return found.group(1)


def assert_no_raw_control(*streams: str) -> None:
    """Nothing a terminal would act on reaches the holder's screen."""
    for stream in streams:
        for byte in RAW_CONTROL:
            assert byte not in stream, f"raw {byte!r} in output: {stream!r}"


def assert_terminal_clean(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `ota-repo ARGS` twice: on a terminal (where click strips nothing), whose output must
    hold no raw control character, and through pipes, which the caller checks further."""
    assert_no_raw_control(ota_repo_tty(repo, *args))
    proc = ota_repo(repo, *args, check=False)
    assert_no_raw_control(proc.stdout, proc.stderr)
    return proc


def refused(
    a: Attempt, proc: subprocess.CompletedProcess[str], *fragments: Any, usage: bool = False
) -> str:
    """A non-zero exit and one line on stderr, without a traceback, naming the fragments (each
    a string or a tuple of alternatives); counted by the red-team recorder. A usage error (exit
    2: an unknown option, say) is no refusal of the attack unless `usage` allows it."""
    assert proc.returncode != 0, f"not refused: {proc.stdout}"
    assert "Traceback" not in proc.stderr, proc.stderr
    if not usage:
        assert proc.returncode == 1, f"a usage error, not a refusal: {proc.stderr}"
    return a.refused(outcome(proc), *fragments, exit_code=proc.returncode)


def swap_key(keyid: str, attacker_pub: Path) -> Callable[[dict[str, Any]], None]:
    """The edit: root's key table maps `keyid` to the attacker's key (roles unchanged)."""

    def edit(obj: dict[str, Any]) -> None:
        change(obj, "root")["keys"][keyid] = key_dict(attacker_pub)

    return edit


def installed(device: LabDevice) -> str | None:
    version: str | None = device.status()["installed_version"]
    return version


# -- vulnerability 1: a keyid is never checked against its key -------------------------------------


def test_staged_root_renewal_with_targets_keyid_on_attackers_key_is_refused(
    lab: Lab, fleet: Fleet, attack: Callable[..., Attempt]
) -> None:
    """Server shell: the staged root renewal's targets keyid now holds the attacker's key;
    holders review and sign it, then the attacker signs targets and the device installs."""
    honest = lab.stage("renew", "root")
    reviewed = reviewed_hash(ota_repo(lab.repo, "request", "show", honest))  # control
    targets_keyid = lab.keyid("release")
    forged = restage(lab.repo, honest, swap_key(targets_keyid, lab.pub("mallory")))
    before = published(lab.repo)
    with attack(fleet.device, may_change=ONLINE) as a:
        for holder in ("alice", "bob"):
            refused(a, ota_repo(lab.repo, "request", "show", forged, check=False), "keyid")
            proc = ota_repo(
                lab.repo, "sign", forged, "--key", lab.uri(holder), "--expect", reviewed,
                check=False,
            )  # fmt: skip
            refused(a, proc, ("keyid", "does not match"))
        refused(a, ota_repo(lab.repo, "publish", forged, check=False), "keyid")
        assert published(lab.repo) == before
        # the follow-up: targets signed by the attacker's key under the targets keyid
        publish_behind(
            lab.repo,
            role="targets",
            role_signer=private_signer(lab.keys, "mallory", keyid=targets_keyid),
            snapshot_signer=private_signer(lab.keys, "snapshot"),
            timestamp_signer=private_signer(lab.keys, "timestamp"),
            files=EVIL_FILES,
        )
        a.refused(
            fleet.device.run("update"),
            "UnsignedMetadataError",
            "targets was signed by 0/1 keys",
            event=FAILED_CHECK,
        )
    assert installed(fleet.device) == "1.0.0"
    assert not (lab.repo / "metadata" / "2.root.json").exists()


def _swap_every_online_and_targets_key(lab: Lab) -> Callable[[dict[str, Any]], None]:
    def edit(obj: dict[str, Any]) -> None:
        for name in ("release", "snapshot", "timestamp"):
            swap_key(lab.keyid(name), lab.pub("mallory"))(obj)

    return edit


def test_exported_root_renewal_with_keys_swapped_in_transit_is_refused(
    lab: Lab, fleet: Fleet, attack: Callable[..., Attempt]
) -> None:
    """In transit: the exported root renewal maps the targets, snapshot and timestamp keyids to
    the attacker's key; holders sign it and the attacker's mirror serves the signed root."""
    honest = lab.stage("renew", "root")
    usb = lab.folder / "usb" / "renew-root.json"
    usb.parent.mkdir()
    ota_repo(lab.repo, "request", "export", honest, str(usb))
    laptops = {h: lab.laptop(h) for h in ("alice", "bob")}
    alice, pinned = laptops["alice"]
    reviewed = reviewed_hash(
        ota_repo(alice, "request", "show", str(usb), "--trusted-root", str(pinned))
    )  # control: the honest file shows, with its hash
    edit_file(usb, _swap_every_online_and_targets_key(lab))
    carried = usb.read_bytes()
    before = published(lab.repo)
    with attack(fleet.device) as a:
        for holder, (laptop, root) in laptops.items():
            # three keyids now hold mallory's one key: "same key" names it as well as "keyid"
            proc = ota_repo(
                laptop, "request", "show", str(usb), "--trusted-root", str(root), check=False
            )
            refused(a, proc, ("keyid", "same key"))
            proc = ota_repo(
                laptop, "sign", str(usb), "--key", lab.uri(holder), "--trusted-root", str(root),
                "--expect", reviewed, check=False,
            )  # fmt: skip
            refused(a, proc, ("keyid", "same key", "does not match"))
        assert usb.read_bytes() == carried  # nothing was signed
        proc = ota_repo(lab.repo, "request", "import", str(usb), check=False)
        refused(a, proc, ("keyid", "same key"))
        refused(a, ota_repo(lab.repo, "publish", str(usb), check=False), ("keyid", "same key"))
        assert published(lab.repo) == before
        # the attacker's mirror: the root the holders signed, every other role by mallory
        root_md = next(c["metadata"] for c in load_request(usb)["changes"] if c["role"] == "root")
        mirror = mirror_of(lab.repo, lab.folder / "mirror", next_root=root_md)
        publish_behind(
            mirror,
            role="targets",
            role_signer=private_signer(lab.keys, "mallory", keyid=lab.keyid("release")),
            snapshot_signer=private_signer(lab.keys, "mallory", keyid=lab.keyid("snapshot")),
            timestamp_signer=private_signer(lab.keys, "mallory", keyid=lab.keyid("timestamp")),
            files=EVIL_FILES,
        )
        fleet.server.repo = FolderSource(mirror)
        a.refused(
            fleet.device.run("update"),
            "UnsignedMetadataError",
            "root was signed by 0/2 keys",
            event=FAILED_CHECK,
        )
    assert installed(fleet.device) == "1.0.0"


ALICE_PIN = "alice-pin-0000"


def test_keyid_swapped_in_transit_is_refused_when_signing_from_a_token(
    tmp_path: Path, attack: Callable[..., Attempt]
) -> None:
    """In transit, against a holder whose root key is on a PKCS#11 token (SoftHSM): the
    exported renewal's targets keyid holds the attacker's key; signing from the token refuses."""
    hsm = softhsm(tmp_path)
    alice_uri = hsm.token("alice", ALICE_PIN)
    k = tmp_path / "keys"
    for name in ("bob", "carol", "release", "snapshot", "timestamp", "mallory"):
        keys.generate_key(k, name, passphrase=PASSPHRASE)
    pin_file = tmp_path / "alice.pin"
    pin_file.write_text(ALICE_PIN + "\n")
    pin_file.chmod(0o600)
    env = cli_env(**hsm.env(pin_file))
    repo = tmp_path / "repo"
    ota_repo(repo, "key", "import-hsm", "alice", "--token-label", "alice", "--out", str(k), env=env)
    ota_repo(
        repo, "init",
        "--root-key", str(k / "alice.pub"), "--root-key", str(k / "bob.pub"),
        "--root-key", str(k / "carol.pub"), "--root-threshold", "2",
        "--targets-key", str(k / "release.pub"),
        "--snapshot-key", str(k / "snapshot.pub"), "--snapshot-uri", f"encfile:{k}/snapshot.key",
        "--timestamp-key", str(k / "timestamp.pub"),
        "--timestamp-uri", f"encfile:{k}/timestamp.key",
        "--sign-with", alice_uri, "--sign-with", f"encfile:{k}/bob.key",
        "--sign-with", f"encfile:{k}/release.key",
        env=env,
    )  # fmt: skip
    lab = Lab(repo, k, tmp_path)
    usb = tmp_path / "renew-root.json"
    ota_repo(repo, "renew", "root", "--export", str(usb))
    laptop, pinned = lab.laptop("alice")
    reviewed = reviewed_hash(
        ota_repo(laptop, "request", "show", str(usb), "--trusted-root", str(pinned), env=env)
    )
    edit_file(usb, swap_key(lab.keyid("release"), lab.pub("mallory")))
    carried = usb.read_bytes()
    with attack(PublishedRepository(repo)) as a:
        proc = ota_repo(
            laptop, "sign", str(usb), "--key", alice_uri, "--trusted-root", str(pinned),
            "--expect", reviewed, env=env, check=False,
        )  # fmt: skip
        refused(a, proc, ("keyid", "does not match"))
        refused(a, ota_repo(repo, "publish", str(usb), check=False), "keyid")
    assert usb.read_bytes() == carried


# -- vulnerability 2: one key counts twice toward a threshold --------------------------------------


COPIES = {"upper-case-hex": upper_hex_copy, "extra-keyval-field": extra_field_copy}


@pytest.mark.parametrize("copy_kind", sorted(COPIES))
@pytest.mark.parametrize("command", ["rotate-root", "init-ceremony"])
def test_same_key_in_another_encoding_is_refused_as_a_new_key(
    lab: Lab, attack: Callable[..., Attempt], copy_kind: str, command: str
) -> None:
    """Single root holder: a re-encoded copy of alice's .pub (new keyid, same key) is added as
    another root key, so alice alone meets a threshold of 2."""
    alias = COPIES[copy_kind](lab.pub("alice"), lab.folder / "alice-again.pub")
    assert keyid_of(key_dict(alias)) != lab.keyid("alice")
    if command == "rotate-root":
        repo, argv = lab.repo, ["rotate", "root", "--add-key", str(alias)]
    else:
        repo = lab.folder / "new-repo"
        k = lab.keys
        argv = [
            "init-ceremony",
            *("--root-key", str(k / "alice.pub"), "--root-key", str(alias)),
            *("--root-threshold", "2", "--targets-key", str(k / "release.pub")),
            *("--snapshot-key", str(k / "snapshot.pub")),
            *("--snapshot-uri", f"encfile:{k}/snapshot.key"),
            *("--timestamp-key", str(k / "timestamp.pub")),
            *("--timestamp-uri", f"encfile:{k}/timestamp.key"),
        ]
    staged = sorted((repo / ".ota" / "staging").glob("*.json"))
    with attack(PublishedRepository(repo)) as a:
        proc = ota_repo(repo, *argv, check=False)
        refused(a, proc, "same key")
    assert_one_line_error(proc, "same key")
    assert sorted((repo / ".ota" / "staging").glob("*.json")) == staged
    if command == "init-ceremony":
        assert not (repo / ".ota" / "config.json").exists()


def test_renewal_listing_one_key_under_two_keyids_is_refused(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """Single root holder with a server shell: the staged renewal lists alice's key a second
    time under another keyid in root's keys (threshold 2), signed by alice under both ids."""
    honest = lab.stage("renew", "root")
    reviewed = reviewed_hash(ota_repo(lab.repo, "request", "show", honest))
    alias = key_dict(upper_hex_copy(lab.pub("alice"), lab.folder / "alice-again.pub"))
    alias_id = keyid_of(alias)

    def list_twice(obj: dict[str, Any]) -> None:
        root = change(obj, "root")
        root["keys"][alias_id] = alias
        root["roles"]["root"]["keyids"].append(alias_id)
        assert root["roles"]["root"]["threshold"] == 2

    forged = restage(lab.repo, honest, list_twice)
    with attack(PublishedRepository(lab.repo)) as a:
        refused(a, ota_repo(lab.repo, "request", "show", forged, check=False), "same key")
        proc = ota_repo(
            lab.repo, "sign", forged, "--key", lab.uri("alice"), "--expect", reviewed, check=False
        )
        refused(a, proc, ("same key", "does not match"))
        # the signatures the old tools let it collect: alice under both keyids, and bob
        path = lab.repo / ".ota" / "staging" / f"{forged}.json"
        obj = load_request(path)
        md = obj["changes"][0]["metadata"]
        alice = private_signer(lab.keys, "alice")
        add_signature(md, alice)
        add_signature(md, alice, keyid=alias_id)
        add_signature(md, private_signer(lab.keys, "bob"))
        save_request(path, obj)
        refused(a, ota_repo(lab.repo, "publish", forged, check=False), "same key")
    assert not (lab.repo / "metadata" / "2.root.json").exists()


# -- vulnerability 3: the review is computed from an unauthenticated context -----------------------


def test_edited_context_does_not_hide_a_revocation(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """In transit: only the embedded context of an exported `revoke model-x` is edited (its
    'published targets' lose model-x too), so the review would show no revocation."""
    honest = lab.stage("revoke", "model-x")
    usb = lab.folder / "revoke.json"
    ota_repo(lab.repo, "request", "export", honest, str(usb))

    def hide(obj: dict[str, Any]) -> None:
        context, new = obj["context"]["targets"]["signed"], change(obj, "targets")
        context.pop("delegations", None)
        if "delegations" in new:
            context["delegations"] = copy.deepcopy(new["delegations"])

    assert edit_file(usb, hide, rebind=False) == honest
    laptop, pinned = lab.laptop("release")
    with attack(PublishedRepository(lab.repo)) as a:
        untrusted = ota_repo(laptop, "request", "show", str(usb), check=False)
        refused(a, untrusted, ("trusted root", "--trusted-root", "OTA_TRUSTED_ROOT"), usage=True)
        shown = ota_repo(
            laptop, "request", "show", str(usb), "--trusted-root", str(pinned), check=False
        )
        if shown.returncode != 0:
            refused(a, shown, "does not verify")
        else:
            lines = [line for line in shown.stdout.splitlines() if "model-x" in line]
            assert any(re.search(r"revok|remov", line) for line in lines), shown.stdout
            as_json = ota_repo(
                laptop, "request", "show", str(usb), "--trusted-root", str(pinned), "--json"
            )
            a.ignored(outcome(as_json), check=lambda r: r["content_hash"] == reviewed_hash(shown))


@pytest.mark.parametrize("where", ["staged", "exported-with-context"])
def test_targets_renewal_that_adds_an_image_shows_the_image(
    lab: Lab, attack: Callable[..., Attempt], where: str
) -> None:
    """Server shell or in transit: a `renew targets` request also lists an image (and, for a
    file, its context lists it too, so the diff would be only 'version N -> N+1')."""
    honest = lab.stage("renew", "targets")
    data, custom = EVIL_FILES[EVIL]
    target = TargetFile.from_data(EVIL, data, ["sha256"])
    target.unrecognized_fields["custom"] = custom

    def add_image(obj: dict[str, Any]) -> None:
        change(obj, "targets")["targets"][EVIL] = target.to_dict()
        if where != "staged":
            obj["context"]["targets"]["signed"]["targets"][EVIL] = target.to_dict()

    laptop, pinned = lab.laptop("release")
    if where == "staged":
        ref, argv = restage(lab.repo, honest, add_image), []
        run = lab.repo
    else:
        usb = lab.folder / "renew-targets.json"
        ota_repo(lab.repo, "request", "export", honest, str(usb))
        edit_file(usb, add_image)
        ref, argv, run = str(usb), ["--trusted-root", str(pinned)], laptop
    with attack(PublishedRepository(lab.repo)) as a:
        shown = ota_repo(run, "request", "show", ref, *argv, check=False)
        if shown.returncode != 0 and where != "staged":
            refused(a, shown)  # the edited context is refused outright: also safe
            return
        text = shown.stdout
        assert EVIL in text, text
        assert str(target.length) in text, text
        assert target.hashes["sha256"][:16] in text, text
        assert "6.6.6" in text and "hardware_ids" in text, text  # the custom field
        as_json = ota_repo(run, "request", "show", ref, *argv, "--json")
        a.ignored(outcome(as_json), check=lambda r: r["content_hash"] == reviewed_hash(shown))


# -- vulnerability 4: terminal control characters rewrite the review -------------------------------


@pytest.mark.parametrize(
    "role,pattern",
    [
        ("model-z", "firmware/z/*\b\b\b"),
        (f"model-z{ESCAPE_SEQUENCES}", "firmware/model-z/*"),
        (f"model-z{OSC_TITLE}", "firmware/model-z/*"),
    ],
    ids=["backspaces-in-path", "csi-in-role-name", "osc-title-in-role-name"],
)
def test_delegate_with_control_characters_is_refused(
    lab: Lab, attack: Callable[..., Attempt], role: str, pattern: str
) -> None:
    """Publisher's friend on the security team: `delegate` is given a path or role name that
    moves the cursor, clears the screen or sets the window title when shown."""
    with attack(PublishedRepository(lab.repo)) as a:
        proc = assert_terminal_clean(
            lab.repo, "delegate", role, "--paths", pattern, "--key", str(lab.pub("mallory"))
        )
        refused(a, proc, "control character")
    assert lab.staged() == set()


def test_control_characters_in_a_staged_request_never_reach_the_terminal(
    lab: Lab, fleet: Fleet, attack: Callable[..., Attempt]
) -> None:
    """Server shell: a staged delegation to the attacker's model-z role gets the path
    firmware/model-x/* hidden by backspaces, a keyid starting ESC[2J ESC[H and a role named
    with an OSC title; the review shows firmware/model-z/*, the device installs mallory's image."""
    honest = lab.stage(
        "delegate", "model-z", "--paths", "firmware/model-z/*", "--key", str(lab.pub("mallory"))
    )
    reviewed = reviewed_hash(ota_repo(lab.repo, "request", "show", honest))
    mallory = lab.keyid("mallory")
    screen_keyid = ESCAPE_SEQUENCES + mallory
    hidden = ["firmware/model-x/*", "\b" * 20 + "firmware/model-z/*"]

    def craft(obj: dict[str, Any]) -> None:
        delegations = change(obj, "targets")["delegations"]
        delegations["keys"][screen_keyid] = delegations["keys"].pop(mallory)
        (role,) = [r for r in delegations["roles"] if r["name"] == "model-z"]
        role["keyids"] = [screen_keyid]
        role["paths"] = hidden
        osc = {
            **copy.deepcopy(role),
            "name": f"{OSC_TITLE}model-y",
            "paths": ["firmware/model-y/*"],
        }
        delegations["roles"].append(osc)

    forged = restage(lab.repo, honest, craft)
    before = published(lab.repo)
    # model-x.json: the device's first lookup since the lab was built walks the honest model-x
    # delegation (terminating) and caches that role, honest metadata new to the device
    with attack(fleet.device, may_change=(*ONLINE, "metadata:model-x.json")) as a:
        shown = assert_terminal_clean(lab.repo, "request", "show", forged)
        expect = reviewed
        if shown.returncode == 0:  # shown escaped: the holder sees the bytes for what they are
            assert "\\x08" in shown.stdout or "\\u0008" in shown.stdout, shown.stdout
            assert "\\x1b" in shown.stdout or "\\u001b" in shown.stdout, shown.stdout
            expect = reviewed_hash(shown)
        else:
            refused(a, shown)
        proc = assert_terminal_clean(
            lab.repo, "sign", forged, "--key", lab.uri("release"), "--expect", expect
        )
        refused(a, proc, ("control character", "keyid", "does not match"))
        refused(a, assert_terminal_clean(lab.repo, "publish", forged))
        assert published(lab.repo) == before
        # the follow-up: mallory's model-z role lists an image for model-x devices
        publish_behind(
            lab.repo,
            role="model-z",
            role_signer=private_signer(lab.keys, "mallory", keyid=screen_keyid),
            snapshot_signer=private_signer(lab.keys, "snapshot"),
            timestamp_signer=private_signer(lab.keys, "timestamp"),
            files=EVIL_FILES,
        )
        a.ignored(
            fleet.device.run("update"), check=lambda r: r["result"] == "no-update", event=NO_UPDATE
        )
    assert installed(fleet.device) == "1.0.0"


def test_path_padded_with_3000_spaces_is_shown_cut(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """Server shell: a staged delegation's path is 3,000 spaces and then firmware/model-x/*,
    pushing the real pattern 20 screen lines away from the line that names the role."""
    honest = lab.stage(
        "delegate", "model-z", "--paths", "firmware/model-z/*", "--key", str(lab.pub("mallory"))
    )
    reviewed = reviewed_hash(ota_repo(lab.repo, "request", "show", honest))

    def pad(obj: dict[str, Any]) -> None:
        for role in change(obj, "targets")["delegations"]["roles"]:
            if role["name"] == "model-z":
                role["paths"] = [" " * 3000 + "firmware/model-x/*"]

    forged = restage(lab.repo, honest, pad)
    before = published(lab.repo)
    with attack(PublishedRepository(lab.repo)) as a:
        # refused (a padded pattern breaks the rules), and even the refusal is cut and bounded
        shown = ota_repo(lab.repo, "request", "show", forged, check=False)
        refused(a, shown, "chars cut")
        out = shown.stdout + shown.stderr
        assert max(len(line) for line in out.splitlines()) < 1000, out
        assert " " * 200 not in out
        proc = ota_repo(
            lab.repo, "sign", forged, "--key", lab.uri("release"), "--expect", reviewed,
            check=False,
        )  # fmt: skip
        refused(a, proc, "chars cut")
        refused(a, ota_repo(lab.repo, "publish", forged, check=False))
    assert published(lab.repo) == before


# -- binding what was reviewed to what is signed ---------------------------------------------------


def test_sign_id_ignores_a_planted_file_of_that_name(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """Local attacker on a holder's machine: a request file named like a staged request id
    (or like an id that is not staged) is planted in the working directory, and `sign ID`
    would sign that file instead."""
    honest = lab.stage("renew", "root")
    reviewed = reviewed_hash(ota_repo(lab.repo, "request", "show", honest))
    other = lab.stage("rotate", "root", "--remove-key", lab.keyid("carol"))
    laptop, _ = lab.laptop("alice")
    ota_repo(lab.repo, "request", "export", other, str(laptop / honest))
    ota_repo(lab.repo, "request", "export", other, str(laptop / "root-v9-0123456789ab"))
    ota_repo(lab.repo, "request", "discard", other)
    planted = {p.name: p.read_bytes() for p in laptop.iterdir()}
    with attack(PublishedRepository(lab.repo)) as a:
        proc = ota_repo_in(
            laptop, lab.repo, "sign", honest, "--key", lab.uri("alice"), "--expect", reviewed
        )
        assert proc.returncode == 0, proc.stderr  # the staged request, not the planted file
        staged = load_request(lab.repo / ".ota" / "staging" / f"{honest}.json")
        signatures = staged["changes"][0]["metadata"]["signatures"]
        assert [s["keyid"] for s in signatures] == [lab.keyid("alice")]
        proc = ota_repo_in(
            laptop, lab.repo, "sign", "root-v9-0123456789ab", "--key", lab.uri("alice"),
            "--expect", reviewed,
        )  # fmt: skip
        refused(a, proc, "no pending signing request")
    assert {p.name: p.read_bytes() for p in laptop.iterdir()} == planted


def test_request_file_swapped_after_review_is_not_signed(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """Local attacker or courier: the holder reviews an exported renewal, then the file is
    swapped for another request (dropping carol from root) before `sign` reads it."""
    honest = lab.stage("renew", "root")
    other = lab.stage("rotate", "root", "--remove-key", lab.keyid("carol"))
    usb = lab.folder / "usb.json"
    ota_repo(lab.repo, "request", "export", honest, str(usb))
    swap = lab.folder / "swap.json"
    ota_repo(lab.repo, "request", "export", other, str(swap))
    laptop, pinned = lab.laptop("alice")
    trusted = ["--trusted-root", str(pinned)]
    reviewed = reviewed_hash(ota_repo(laptop, "request", "show", str(usb), *trusted))
    shutil.copy(swap, usb)
    with attack(PublishedRepository(lab.repo)) as a:
        proc = ota_repo(
            laptop, "sign", str(usb), "--key", lab.uri("alice"), *trusted, "--expect", reviewed,
            check=False,
        )  # fmt: skip
        refused(a, proc, "does not match")
        proc = ota_repo(laptop, "sign", str(usb), "--key", lab.uri("alice"), *trusted, check=False)
        refused(a, proc, "--expect", usage=True)
    assert usb.read_bytes() == swap.read_bytes()


def test_expired_request_is_not_signed(lab: Lab, attack: Callable[..., Attempt]) -> None:
    """Server shell: an old request (its root v2 already expired) is put in front of holders,
    who would sign it without a word."""
    honest = lab.stage("renew", "root")

    def expire(obj: dict[str, Any]) -> None:
        change(obj, "root")["expires"] = "2020-01-01T00:00:00Z"

    forged = restage(lab.repo, honest, expire)
    with attack(PublishedRepository(lab.repo)) as a:
        shown = ota_repo(lab.repo, "request", "show", forged, check=False)
        if shown.returncode == 0:
            expect, why = reviewed_hash(shown), "expired"
        else:
            refused(a, shown, "expired")
            expect, why = "0" * 64, ("expired", "does not match")
        proc = ota_repo(
            lab.repo, "sign", forged, "--key", lab.uri("alice"), "--expect", expect, check=False
        )
        refused(a, proc, why)
    staged = load_request(lab.repo / ".ota" / "staging" / f"{forged}.json")
    assert staged["changes"][0]["metadata"]["signatures"] == []


def test_request_json_review_names_the_content_hash(lab: Lab) -> None:
    """Control for the tests above: an honest request shows, with the same content hash in
    text and JSON, and signs with it."""
    honest = lab.stage("renew", "root")
    text = ota_repo(lab.repo, "request", "show", honest)
    data = json.loads(ota_repo(lab.repo, "request", "show", honest, "--json").stdout)
    assert data["content_hash"] == reviewed_hash(text)
    ota_repo(lab.repo, "sign", honest, "--key", lab.uri("alice"), "--expect", data["content_hash"])
