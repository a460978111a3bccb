"""Property: no change to signed metadata in a request goes unseen by the holder's review.

For any mutation of any field of the signed metadata in a request (a value replaced, a field
added or removed), with the request id recomputed as an attacker would, either the request is
refused (parse, rules, signature checks) or the review a holder reads differs from the review of
the honest request. There is no third outcome: a silent signature.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import DelegatedRole, Delegations, Metadata, Role, Root, TargetFile, Targets
from tuf.api.serialization import SerializationError

from repository import review
from repository.errors import BadInputError
from repository.signing import RoleChange, SigningRequest, content_digest, validate

EXPIRES = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
SIGNERS = {n: CryptoSigner.generate_ed25519() for n in ("a", "b", "t", "p", "q")}


def _published() -> tuple[Metadata[Root], Metadata[Targets]]:
    root = Root(expires=EXPIRES, consistent_snapshot=True)
    root.roles = {r: Role([], 1) for r in ("root", "targets", "snapshot", "timestamp")}
    for h in "ab":
        root.add_key(SIGNERS[h].public_key, "root")
    root.roles["root"].threshold = 2
    for role in ("targets", "snapshot", "timestamp"):
        root.add_key(SIGNERS["t"].public_key, role)
    root_md = Metadata(root)
    for h in "ab":
        root_md.sign(SIGNERS[h], append=True)
    targets = Targets(expires=EXPIRES)
    targets.targets["firmware/x/1.bin"] = TargetFile.from_data("firmware/x/1.bin", b"one")
    key = SIGNERS["p"].public_key
    targets.delegations = Delegations(
        keys={key.keyid: key},
        roles={"fw-x": DelegatedRole("fw-x", [key.keyid], 1, True, ["firmware/x/*"])},
    )
    targets_md = Metadata(targets)
    targets_md.sign(SIGNERS["t"])
    return root_md, targets_md


ROOT, TARGETS = _published()


def _honest_change() -> dict[str, Any]:
    """targets v2: one more image with hashes and custom data, a second delegation."""
    md = Metadata.from_bytes(TARGETS.to_bytes())
    signed = md.signed
    assert isinstance(signed, Targets) and signed.delegations is not None
    signed.version = 2
    tf = TargetFile.from_data("firmware/x/2.bin", b"two")
    tf.unrecognized_fields["custom"] = {
        "firmware": {"version": "2.0.0", "hardware_ids": ["model-x"], "security_counter": 1}
    }
    signed.targets[tf.path] = tf
    key = SIGNERS["q"].public_key
    signed.add_key(key, "fw-x")
    assert signed.delegations.roles is not None
    signed.delegations.roles["fw-y"] = DelegatedRole("fw-y", [key.keyid], 1, True, ["fw/y/*"])
    md.signatures.clear()
    return md.to_dict()


HONEST = _honest_change()


def _request_file(md_dict: dict[str, Any]) -> bytes | None:
    """A request file as the attacker writes it: content mutated, id recomputed to match
    (None when python-tuf cannot even build or serialise such metadata)."""
    try:
        md = Metadata.from_dict(copy.deepcopy(md_dict))
        changes = [RoleChange("targets", 1, md)]
        req_id = f"targets-v{md.signed.version}-{content_digest(changes)[:12]}"
        return SigningRequest(req_id, "now", "attacker", [], changes, {}).to_bytes()
    except (ValueError, TypeError, KeyError, AttributeError, SerializationError):
        return None


def _review(md_dict: dict[str, Any]) -> list[str] | None:
    """The holder's review of the request, or None if a check refuses it (BadInputError only:
    any other exception would reach the holder as a traceback, and fails the property)."""
    data = _request_file(md_dict)
    if data is None:
        return None
    try:
        return _checked_review(SigningRequest.from_bytes(data))
    except BadInputError:
        return None


def _checked_review(req: SigningRequest) -> list[str]:
    context = review.verified_context(
        req, trusted_root=ROOT, roots=[ROOT], current={"targets": TARGETS}
    )
    validate(req, context)
    lines = review.review_request(req, review.previous_versions(req, context))
    return lines[1:]  # all but the content hash line, which differs whenever the bytes do


HONEST_REVIEW = _review(HONEST) or []


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            found.extend(_paths(v, (*prefix, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found.extend(_paths(v, (*prefix, i)))
    return found


SIGNED_PATHS = [p for p in _paths(HONEST["signed"]) if p]
VALUES = st.one_of(
    st.integers(min_value=-3, max_value=2**64),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("a/*\x08\x1b[]0;\x07\u202e\u0430 "), max_size=40),
    st.lists(st.text(max_size=8), max_size=3),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=2),
)


def _mutate(signed: dict[str, Any], path: tuple[Any, ...], how: str, value: Any) -> None:
    parent: Any = signed
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == "replace":
        parent[last] = value
    elif how == "delete":
        del parent[last]
    else:  # add a field beside the one at `path`
        target = parent[last] if isinstance(parent[last], dict) else parent
        if isinstance(target, dict):
            target[f"x-{len(target)}"] = value
        else:
            target.append(value)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    path=st.sampled_from(SIGNED_PATHS),
    how=st.sampled_from(["replace", "delete", "add"]),
    value=VALUES,
)
def test_any_mutation_is_refused_or_shown(path: tuple[Any, ...], how: str, value: Any) -> None:
    md_dict = copy.deepcopy(HONEST)
    try:
        _mutate(md_dict["signed"], path, how, value)
    except (TypeError, KeyError, IndexError):
        return  # not a mutation this path allows
    if _request_file(md_dict) == _request_file(HONEST):
        return  # the same signed bytes (python-tuf fills a missing spec_version, for one)
    mutated = _review(md_dict)
    if mutated is None:
        return  # refused: nothing can be signed
    assert mutated != HONEST_REVIEW, f"unseen change at {path} ({how} {value!r})"


def test_the_honest_review_shows_what_a_holder_must_see() -> None:
    assert HONEST_REVIEW, "the honest request is refused"
    text = "\n".join(HONEST_REVIEW)
    for fragment in ("firmware/x/2.bin", "sha256", "2.0.0", "security_counter", "fw-y", "fp:"):
        assert fragment in text, fragment
