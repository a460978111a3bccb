"""Which keys a repository uses, for which roles, and where each signer lives."""

from __future__ import annotations

from typing import Any

from tuf.api.metadata import Root, Targets

from repository.manager import OtaRepository

_KMS = ("awskms", "gcpkms", "azurekms", "hv", "sigstore")


def signer_location(uri: str | None) -> str:
    """A readable place for a signer URI (never its secret: URIs hold none)."""
    if uri is None:
        return "offline (not on this machine)"
    scheme, _, rest = uri.partition(":")
    if scheme in ("encfile", "file2", "file"):
        return f"file {rest}"
    if scheme == "hsm":
        return f"PKCS#11 token ({uri})"
    if scheme in _KMS:
        return f"KMS ({uri})"
    return uri


def key_rows(repo: OtaRepository) -> list[dict[str, Any]]:
    """One row per key: keyid, key type, the roles that list it, and its signer here."""
    root = repo.current_metadata(Root.type).signed
    targets = repo.current_metadata(Targets.type).signed
    assert isinstance(root, Root) and isinstance(targets, Targets)
    roles: dict[str, list[str]] = {}
    types: dict[str, str] = {}
    for role_name, role in root.roles.items():
        for keyid in role.keyids:
            roles.setdefault(keyid, []).append(role_name)
            types[keyid] = root.keys[keyid].keytype
    delegations = targets.delegations
    if delegations is not None:
        for name, drole in (delegations.roles or {}).items():
            for keyid in drole.keyids:
                roles.setdefault(keyid, []).append(name)
        if delegations.succinct_roles is not None:
            bins = delegations.succinct_roles
            for keyid in bins.keyids:
                roles.setdefault(keyid, []).append(f"{bins.name_prefix}-* ({bins.number_of_bins})")
        types.update({k: v.keytype for k, v in delegations.keys.items()})
    uris = {e["keyid"]: e["uri"] for entries in repo.config.signers.values() for e in entries}
    return [
        {
            "keyid": keyid,
            "keytype": types.get(keyid, "?"),
            "roles": role_names,
            "signer": signer_location(uris.get(keyid)),
            "uri": uris.get(keyid),
        }
        for keyid, role_names in sorted(roles.items(), key=lambda kv: (kv[1], kv[0]))
    ]
