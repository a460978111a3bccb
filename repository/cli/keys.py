"""`ota-repo key ...`: make key pairs, re-encrypt key files, read keys off PKCS#11 tokens, list
every key in use."""

from __future__ import annotations

from pathlib import Path

import click

from repository import hsm
from repository.cli._base import Context, cli, emit, pass_ctx
from repository.fsutil import make_private_dir
from repository.keyident import fingerprint
from repository.keyinfo import key_rows
from repository.keys import KEY_TYPES, generate_key, reencrypt_key_file, write_public_key


@cli.group("key")
def key_group() -> None:
    """Key pairs for key holders and publishers, and the keys the repository uses."""


@key_group.command("generate")
@click.argument("name")
@click.option(
    "--type", "key_type", type=click.Choice(KEY_TYPES), default="ed25519", show_default=True
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Folder for NAME.key (encrypted, owner-only) and NAME.pub.",
)
@click.option("--json", "as_json", is_flag=True)
def key_generate(name: str, key_type: str, out_dir: Path, as_json: bool) -> None:
    """Write NAME.key (encrypted with the passphrase from OTA_KEY_PASSPHRASE_FILE or a prompt)
    and NAME.pub, and print the keyid. No repository is needed."""
    if not out_dir.exists():
        make_private_dir(out_dir)  # a new key folder is owner-only
    priv, pub, key = generate_key(out_dir, name, key_type=key_type)
    emit(
        {
            "keyid": key.keyid,
            "fingerprint": fingerprint(key),
            "public": str(pub),
            "uri": f"encfile:{priv.resolve()}",
        },
        as_json,
        f"keyid {key.keyid}\nfingerprint {fingerprint(key)} (reviews show keys by it)\n"
        f"public key {pub}\nsigner URI encfile:{priv.resolve()}",
    )


@key_group.command("reencrypt")
@click.argument("key_file", type=click.Path(dir_okay=False, path_type=Path))
def key_reencrypt(key_file: Path) -> None:
    """Encrypt KEY_FILE again with scrypt (files written before it used PBKDF2 at 2,048
    iterations). It opens with the passphrase from OTA_KEY_PASSPHRASE_FILE (or a prompt) and
    keeps it, or takes the one in OTA_NEW_KEY_PASSPHRASE_FILE. The key itself is unchanged."""
    reencrypt_key_file(key_file)
    click.echo(f"re-encrypted {key_file} (scrypt, AES-256-CBC); same key, same keyid")


@key_group.command("import-hsm")
@click.argument("name")
@click.option("--token-label", required=True, help="Label of the PKCS#11 token.")
@click.option("--hsm-keyid", type=int, default=2, show_default=True, help="Key id on the token.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True)
def key_import_hsm(
    name: str, token_label: str, hsm_keyid: int, out_dir: Path, as_json: bool
) -> None:
    """Read an ECDSA P-256 key off a PKCS#11 token (PYKCS11LIB names the module): write NAME.pub
    and print the signer URI to use with --key / --sign-with."""
    uri, key = hsm.import_key(token_label=token_label, hsm_keyid=hsm_keyid)
    pub = out_dir / f"{name}.pub"
    if pub.exists():
        raise click.ClickException(f"{pub} exists already")
    write_public_key(pub, key)
    emit(
        {"keyid": key.keyid, "fingerprint": fingerprint(key), "public": str(pub), "uri": uri},
        as_json,
        f"keyid {key.keyid}\nfingerprint {fingerprint(key)}\npublic key {pub}\nsigner URI {uri}",
    )


@key_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def key_list(ctx: Context, as_json: bool) -> None:
    """Every key of every role: keyid, roles, and where its signer lives."""
    rows = key_rows(ctx.open())
    lines = [f"{'keyid':<16} {'roles':<34} signer"]
    for r in rows:
        lines.append(f"{r['keyid'][:16]:<16} {', '.join(r['roles']):<34} {r['signer']}")
    emit({"keys": rows}, as_json, "\n".join(lines))
