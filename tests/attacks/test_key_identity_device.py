"""One key, one vote, on the device (issue 9, key identity): attacks the real `ota-client`
refuses although python-tuf's ngclient verified the metadata.

python-tuf counts signatures per keyid, so the same key listed twice (the second time with its
hex in upper case, a new keyid) meets a threshold of 2 alone, and a keyid can be made to hold
another key than the one a review showed. Each attack here gets metadata with such a key table
signed by the holders it needs (a tricked signing ceremony; the attacker also holds the online
snapshot and timestamp keys), ngclient accepts it, and the device must refuse it before any
firmware is picked: one line saying why, a failed check in its log, the installed version and
slot unchanged. ngclient has cached the verified metadata by then (it persists as it verifies),
which is why those files are allowed to change: the device keeps refusing while that metadata
is the newest it trusts, and takes the honest update once the security team signs newer metadata.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from securesystemslib.formats import encode_canonical
from securesystemslib.signer import (
    CryptoSigner,
    Key,
    SecretsHandler,
    Signature,
    Signer,
    SSlibKey,
)
from tuf.api.metadata import DelegatedRole, Delegations, Targets

from tests.attacks.conftest import Lab
from tests.attacks.toolkit.record import Attempt
from tests.attacks.toolkit.simulator import RepositorySimulator, firmware_path

FAILED_CHECK = {"event": "check", "result": "failed"}
X9 = firmware_path("model-x", "9.0.0")
ONLINE = ("metadata:timestamp.json", "metadata:snapshot.json")
DAY = timedelta(days=1)
NEW_ROOT = ("metadata:root.json", "metadata:root_history/2.root.json")


def keyid_of(data: dict[str, Any]) -> str:
    """The TUF default keyid (SHA-256 of the canonical JSON of keytype, scheme, keyval)."""
    body = {k: data[k] for k in ("keytype", "scheme", "keyval")}
    return hashlib.sha256(str(encode_canonical(body)).encode()).hexdigest()


def upper_case_copy(key: Key) -> SSlibKey:
    """The same ed25519 key with its hex in upper case: a new, canonical keyid."""
    data = copy.deepcopy(key.to_dict())
    data["keyval"]["public"] = data["keyval"]["public"].upper()
    return SSlibKey(keyid_of(data), data["keytype"], data["scheme"], data["keyval"])


def under_keyid(key: Key, keyid: str) -> SSlibKey:
    """`key` filed under someone else's keyid."""
    return SSlibKey(keyid, key.keytype, key.scheme, copy.deepcopy(key.keyval))


class Presented(Signer):
    """A signer's private key signing as another key entry (`as_key`): the signature is the
    key's own, filed under `as_key`'s keyid."""

    def __init__(self, signer: Signer, as_key: SSlibKey):
        self._signer = signer
        self._key = as_key

    @classmethod
    def from_priv_key_uri(
        cls, priv_key_uri: str, public_key: Key, secrets_handler: SecretsHandler | None = None
    ) -> Presented:
        raise NotImplementedError

    @property
    def public_key(self) -> Key:
        return self._key

    def sign(self, payload: bytes) -> Signature:
        return Signature(self._key.keyid, self._signer.sign(payload).signature)


def honest_again(lab: Lab) -> None:
    """The security team signs newer metadata than the attack's (a root v3 over the attack's
    v2, targets and the delegated roles beyond its versions) and releases 2.0.0; the device
    takes it (so the refusal was the key table's doing, not a broken setup)."""
    lab.repo.publish_root()
    lab.repo.publish_root()
    lab.repo.publish(force=["targets", *lab.repo.delegated])
    lab.release("2.0.0")
    lab.recovers("2.0.0")


def _evil_release(evil: RepositorySimulator, *, role: str) -> None:
    evil.add_firmware("model-x", "9.0.0", counter=9, role=role, salt="evil")
    evil.publish(force=["targets"])


def test_root_lists_the_targets_key_twice(lab: Lab, attack: Callable[..., Attempt]) -> None:
    """A root renewal the root holders signed lists one targets holder's key a second time
    (its hex in upper case); with the targets threshold at 2 that one holder alone signs a
    targets role listing their own image, under both keyids. ngclient counts 2/2."""
    evil = lab.repo.fork()
    holder = evil.signers["targets"][0]
    twin = upper_case_copy(holder.public_key)
    assert twin.keyid != holder.public_key.keyid
    evil.root.add_key(twin, "targets")
    assert evil.root.roles["targets"].threshold == 2
    evil.publish_root()  # signed by the real root keys, as a renewal would be
    evil.sign_with["targets"] = [holder, Presented(holder, twin)]
    _evil_release(evil, role="targets")
    lab.server.repo = evil
    may_change = (*NEW_ROOT, *ONLINE, "metadata:targets.json")
    with attack(lab.device, "root lists the targets key twice", may_change=may_change) as a:
        for _ in range(2):  # refused again on the next run: the cached root is checked too
            out = lab.device.run("update")
            a.refused(
                out,
                "refused root version 2: keyids ",
                "are the same ed25519 key (one key must not count twice toward a threshold)",
                event=FAILED_CHECK,
            )
            assert holder.public_key.keyid[:16] in out.error and twin.keyid[:16] in out.error
        status = lab.device.status()
        assert (status["installed_version"], status["active_slot"]) == ("1.0.0", "A")
        assert status["trial_slot"] is None
        assert not lab.device.slot_holds("B", evil.images[X9])
    honest_again(lab)


def test_root_on_the_way_lets_one_root_key_count_twice(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """A root v2 the root holders signed lists one holder's root key a second time; that
    holder alone then signs a root v3 (2/2 for v2's root role) that hands root and targets to
    their own key. v3's key table is clean: only the check of the root on the way finds it.
    ngclient trusts v3 from then on (no honest root can follow it), so there is no recovery
    to show; the device must keep refusing every update instead."""
    evil = lab.repo.fork()
    holder = evil.signers["root"][0]
    twin = upper_case_copy(holder.public_key)
    evil.root.add_key(twin, "root")
    evil.publish_root()
    mine = CryptoSigner.generate_ed25519()
    for role in ("root", "targets"):
        for keyid in list(evil.root.roles[role].keyids):
            evil.root.revoke_key(keyid, role)
        evil.root.add_key(mine.public_key, role)
        evil.root.roles[role].threshold = 1
    evil.publish_root(signers=[holder, Presented(holder, twin), mine])
    evil.sign_with["targets"] = [mine]
    _evil_release(evil, role="targets")
    lab.server.repo = evil
    may_change = (*NEW_ROOT, "metadata:root_history/3.root.json", *ONLINE, "metadata:targets.json")
    with attack(lab.device, "a root on the way counts one key twice", may_change=may_change) as a:
        for command in ("update", "check"):
            a.refused(
                lab.device.run(command),
                "refused root version 2: keyids ",
                "are the same ed25519 key",
                event=FAILED_CHECK,
            )
        assert lab.device.status()["installed_version"] == "1.0.0"


def test_root_files_the_attackers_keys_under_the_holders_keyids(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """A root renewal in which two targets keyids the holders know now hold the attacker's
    keys (a review that compares keyids shows no change); the attacker signs targets with
    them under those keyids."""
    evil = lab.repo.fork()
    mine = [CryptoSigner.generate_ed25519() for _ in range(2)]
    signers: list[Signer] = []
    for keyid, signer in zip(evil.root.roles["targets"].keyids[:2], mine, strict=True):
        planted = under_keyid(signer.public_key, keyid)
        evil.root.keys[keyid] = planted
        signers.append(Presented(signer, planted))
    evil.publish_root()
    evil.sign_with["targets"] = signers
    _evil_release(evil, role="targets")
    lab.server.repo = evil
    may_change = (*NEW_ROOT, *ONLINE, "metadata:targets.json")
    with attack(
        lab.device, "root files foreign keys under known keyids", may_change=may_change
    ) as a:
        out = lab.device.run("update")
        a.refused(
            out, "refused root version 2: keyid ", "is not the keyid of its key", event=FAILED_CHECK
        )
        assert lab.device.status()["installed_version"] == "1.0.0"
    honest_again(lab)


def test_targets_delegates_to_one_publisher_key_twice(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """A targets renewal the targets holders signed lists the model-x publisher's key a second
    time (upper-case hex) for firmware-model-x (threshold 2); that one publisher then signs
    their own image under both keyids, and ngclient counts 2/2."""
    evil = lab.repo.fork()
    publisher = evil.signers["firmware-model-x"][0]
    twin = upper_case_copy(publisher.public_key)
    evil.targets.add_key(twin, "firmware-model-x")
    evil.sign_with["firmware-model-x"] = [publisher, Presented(publisher, twin)]
    _evil_release(evil, role="firmware-model-x")
    lab.server.repo = evil
    may_change = (*ONLINE, "metadata:targets.json", "metadata:firmware-model-x.json")
    with attack(lab.device, "targets delegates to one key twice", may_change=may_change) as a:
        out = lab.device.run("update")
        version = evil.targets.version
        a.refused(
            out,
            f"refused the delegations of targets version {version}: keyids ",
            "are the same ed25519 key",
            event=FAILED_CHECK,
        )
        assert lab.device.status()["installed_version"] == "1.0.0"
    with attack(lab.device, "check sees the same refusal", may_change=may_change) as a:
        a.refused(lab.device.run("check"), "are the same ed25519 key", event=FAILED_CHECK)
    honest_again(lab)


def test_only_the_delegations_a_lookup_follows_are_checked(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """The model-y publishers (tricked) delegate their line on to a sub-publisher's key listed
    twice (threshold 2), and that one sub-publisher signs a model-y 9.0.0 alone. A model-y
    device, whose lookups follow that delegation, refuses; a model-x device never uses those
    keys, so one publisher's key table cannot hold back another model's honest release."""
    sub = CryptoSigner.generate_ed25519()
    key = sub.public_key
    twin = upper_case_copy(key)
    lab.repo.delegated["firmware-model-y"].delegations = Delegations(
        keys={key.keyid: key, twin.keyid: twin},
        roles={
            "model-y-sub": DelegatedRole(
                "model-y-sub", [key.keyid, twin.keyid], 2, True, paths=["firmware/model-y/*"]
            )
        },
    )
    lab.repo.delegated["model-y-sub"] = Targets(expires=lab.repo.now() + DAY)
    lab.repo.delegated["model-y-sub"].version = 0  # the publish below makes it 1
    lab.repo.signers["model-y-sub"] = [sub, Presented(sub, twin)]
    lab.repo.add_firmware("model-y", "9.0.0", counter=9, role="model-y-sub", salt="evil")
    lab.repo.publish(force=["firmware-model-y", "model-y-sub"])
    lab.release("2.0.0")
    out = lab.device.ok("update")
    assert (out["version"], out["slot"]) == ("2.0.0", "B")
    device_y = lab.new_device("dev-y", hwid="model-y", factory=firmware_path("model-y", "1.0.0"))
    version = lab.repo.delegated["firmware-model-y"].version
    # ngclient verified and cached model-y-sub before the device looked at who delegated it
    may_change = ("metadata:model-y-sub.json",)
    with attack(device_y, "model-y line delegated to one key twice", may_change=may_change) as a:
        a.refused(
            device_y.run("update"),
            f"refused the delegations of firmware-model-y version {version}: keyids ",
            "are the same ed25519 key",
            event=FAILED_CHECK,
        )
