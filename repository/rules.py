"""The rules every new version of an offline role must meet, at staging and again at publish.

python-tuf parses metadata leniently (a threshold of `true` is 1, an unknown field is kept, a
threshold may exceed the keys that could meet it) and signs whatever it is given. These rules
run on the exact metadata a request carries, when it is staged, imported, signed and published,
so nothing a holder signs or a device receives is broken or ambiguous.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tuf.api.metadata import (
    SPECIFICATION_VERSION,
    DelegatedRole,
    Delegations,
    Root,
    Signed,
    Targets,
)

from repository.errors import BadInputError
from repository.keyident import check_key_table
from repository.render import has_control, plain

ROLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED_NAMES = frozenset({"root", "targets", "snapshot", "timestamp"})
MAX_PATH = 255


def check_role_name(name: Any, *, delegated: bool = True) -> str:
    """A role name: 1-64 ASCII letters, digits, '.', '_', '-', matched in full; a delegated role
    may not take a top-level name in any letter case (they collide on case-insensitive disks).

    Raises:
        BadInputError: any other name.
    """
    if not isinstance(name, str) or not ROLE_NAME.fullmatch(name):
        shown = plain(name) if isinstance(name, str) else repr(name)
        reason = " (control character)" if isinstance(name, str) and has_control(name) else ""
        raise BadInputError(f"bad role name {shown}{reason}")
    if delegated and name.lower() in RESERVED_NAMES:
        raise BadInputError(f"bad role name {name}: reserved for a top-level role")
    return name


def check_text(what: str, value: Any, limit: int = MAX_PATH) -> str:
    """A path or pattern from metadata or the command line: a string, no control characters.

    Raises:
        BadInputError: not a string, too long, or holding a control or invisible character.
    """
    if not isinstance(value, str) or not value:
        raise BadInputError(f"{what}: not a non-empty string")
    if has_control(value):
        raise BadInputError(f"{what} {plain(value)}: holds a control character")
    if len(value) > limit or value != value.strip():
        raise BadInputError(f"{what} {plain(value)}: longer than {limit} or padded with spaces")
    return value


def validate_pattern(pattern: str) -> str:
    """A delegation path pattern: relative, no empty, '.' or '..' segments, no control characters.

    Raises:
        BadInputError: a pattern that would match nothing sensible, or too much.
    """
    check_text("bad path pattern", pattern)
    if pattern.startswith("/") or "\\" in pattern:
        raise BadInputError(
            f"bad path pattern {plain(pattern)}: relative patterns like firmware/model-x/*"
        )
    if any(seg in ("", ".", "..") for seg in pattern.split("/")):
        raise BadInputError(f"bad path pattern {plain(pattern)}: empty, '.' or '..' segment")
    return pattern


def _segments_overlap(a: str, b: str) -> bool:
    return fnmatch.fnmatchcase(a, b) or fnmatch.fnmatchcase(b, a) or ("*" in a and "*" in b)


def patterns_overlap(a: str, b: str) -> bool:
    """Whether some path could match both patterns (a `*` matches within one segment).

    Conservative: two wildcard segments are taken to overlap.
    """
    sa, sb = a.split("/"), b.split("/")
    return len(sa) == len(sb) and all(_segments_overlap(x, y) for x, y in zip(sa, sb, strict=True))


def overlaps(roles: Mapping[str, DelegatedRole], name: str, paths: Sequence[str]) -> list[str]:
    """Every pattern of `name` that overlaps another delegation's pattern, in words."""
    found = []
    for other, role in roles.items():
        if other == name:
            continue
        for mine in paths:
            for theirs in role.paths or []:
                if patterns_overlap(mine, theirs):
                    found.append(
                        f"{plain(name)} path {plain(mine)} overlaps {plain(other)} path "
                        f"{plain(theirs)}"
                    )
    return found


def all_overlaps(delegations: Delegations | None) -> list[str]:
    """Every overlapping pair of patterns among a targets role's delegations, each once."""
    roles = (delegations.roles if delegations else None) or {}
    names = list(roles)
    found = []
    for i, name in enumerate(names):
        later = {n: roles[n] for n in names[i + 1 :]}
        found.extend(overlaps(later, name, roles[name].paths or []))
    return found


def check_numbers(obj: Any, where: str) -> None:
    """Metadata numbers are integers: canonical JSON has no floats, and `nan` has no meaning.

    Raises:
        BadInputError: naming the first float found and where.
    """
    if isinstance(obj, float):
        shown = "nan" if math.isnan(obj) else repr(obj)
        raise BadInputError(f"{where}: {shown} is not an integer (metadata numbers are integers)")
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_numbers(v, f"{where}.{plain(str(k), 40)}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_numbers(v, f"{where}[{i}]")


def _int(value: Any, what: str, *, low: int = 1) -> int:
    if type(value) is not int or value < low:
        raise BadInputError(f"{what} must be an integer of at least {low}, not {value!r}")
    return value


def _threshold(what: str, threshold: Any, keyids: Sequence[str]) -> None:
    if not isinstance(keyids, list) or not all(isinstance(k, str) for k in keyids):
        raise BadInputError(f"{what}: keyids must be a list of strings")
    _int(threshold, f"{what} threshold")
    if threshold > len(keyids):
        raise BadInputError(
            f"{what}: threshold {threshold} over {len(keyids)} key(s) can never be met"
        )


def _no_unknown(what: str, fields: Mapping[str, Any], allowed: Iterable[str] = ()) -> None:
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise BadInputError(
            f"{what} carries fields this product does not know: "
            f"{', '.join(plain(f, 40) for f in unknown)}"
        )


def _spec_version(signed: Signed, role: str) -> None:
    parts = signed.spec_version.split(".")
    supported = [int(p) for p in SPECIFICATION_VERSION]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) != 3 or numbers[:2] != supported[:2] or numbers[2] > supported[2]:
        raise BadInputError(
            f"{role}: spec_version {plain(signed.spec_version)} is not one this product supports "
            f"(1.0.0 to {'.'.join(SPECIFICATION_VERSION)})"
        )


def _check_root(root: Root, allow_single_root_key: bool) -> None:
    check_key_table(root.keys, "root")
    used: set[str] = set()
    for name, role in root.roles.items():
        _no_unknown(f"root role {name}", role.unrecognized_fields)
        _threshold(f"root: {name}", role.threshold, role.keyids)
        missing = [k for k in role.keyids if k not in root.keys]
        if missing:
            raise BadInputError(f"root: {name} lists key {plain(missing[0][:12])}, not in root")
        used.update(role.keyids)
    unused = sorted(set(root.keys) - used)
    if unused:
        raise BadInputError(f"root lists key {unused[0][:12]} that no role uses")
    if root.roles[Root.type].threshold < 2 and not allow_single_root_key:
        raise BadInputError(
            "root threshold below 2: one stolen key would own the repository "
            "(a development repository allows it: --allow-single-root-key)"
        )
    if root.consistent_snapshot is not True:
        raise BadInputError(
            "root: consistent_snapshot must be true (devices fetch versioned files)"
        )


def _check_delegations(role: str, d: Delegations) -> None:
    _no_unknown(f"{role} delegations", d.unrecognized_fields)
    check_key_table(d.keys, f"{role} delegations")
    if d.roles is not None:
        lowered: dict[str, str] = {}
        for name, drole in d.roles.items():
            check_role_name(name)
            clash = lowered.setdefault(name.lower(), name)
            if clash != name:
                raise BadInputError(f"{role}: delegations {clash} and {name} differ only in case")
            _no_unknown(f"delegation {name}", drole.unrecognized_fields)
            _threshold(f"delegation {name}", drole.threshold, drole.keyids)
            missing = [k for k in drole.keyids if k not in d.keys]
            if missing:
                raise BadInputError(
                    f"delegation {name} lists key {plain(missing[0][:12])}, unknown"
                )
            if drole.path_hash_prefixes is not None:
                raise BadInputError(f"delegation {name}: path_hash_prefixes are not supported")
            for pattern in drole.paths or []:
                validate_pattern(pattern)
            if not drole.paths:
                raise BadInputError(f"delegation {name} delegates no paths")
    if d.succinct_roles is not None:
        bins = d.succinct_roles
        _no_unknown(f"{role} hash-bin delegation", bins.unrecognized_fields)
        _threshold(f"{role} hash-bin delegation", bins.threshold, bins.keyids)
        check_role_name(bins.name_prefix)


def _check_targets(role: str, targets: Targets) -> None:
    for path, target in targets.targets.items():
        check_text(f"{role} target path", path)
        _no_unknown(f"{role} target {plain(path)}", target.unrecognized_fields, ("custom",))
        _int(target.length, f"{role} target {plain(path)} length", low=0)
        for algo, digest in target.hashes.items():
            if not re.fullmatch(r"[a-z0-9-]{1,20}", algo) or not re.fullmatch(
                r"[0-9a-f]{32,128}", str(digest)
            ):
                raise BadInputError(f"{role} target {plain(path)}: malformed hash {plain(algo)}")
    if targets.delegations is not None:
        _check_delegations(role, targets.delegations)


def check_signed(role: str, signed: Signed, *, allow_single_root_key: bool = False) -> None:
    """Refuse a new version of an offline role that is broken, ambiguous or carries what no
    review can vouch for.

    Raises:
        BadInputError: the first rule broken, in one line.
    """
    _int(signed.version, f"{role} version")
    _spec_version(signed, role)
    _no_unknown(role, signed.unrecognized_fields)
    check_numbers(signed.to_dict(), role)
    if isinstance(signed, Root):
        if role != Root.type:
            raise BadInputError(f"{role}: root metadata where {role} was expected")
        _check_root(signed, allow_single_root_key)
    elif isinstance(signed, Targets):
        if role == Root.type:
            raise BadInputError("root: targets metadata where root was expected")
        _check_targets(role, signed)
    else:
        raise BadInputError(f"{role}: {signed.type} metadata is never signed by request")
