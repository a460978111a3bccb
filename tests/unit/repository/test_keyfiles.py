from __future__ import annotations

from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner, Signer

from repository import keys
from repository.errors import BadInputError, KeyError_
from tests.helpers.repo import assert_encrypted_pem


@pytest.fixture(autouse=True)
def _passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    keys.forget_secrets()
    monkeypatch.delenv("OTA_KEY_PASSPHRASE_FILE", raising=False)
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", "s3cret")
    yield
    keys.forget_secrets()


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa"])
def test_generated_key_signs_through_its_encfile_uri(tmp_path: Path, key_type: str) -> None:
    priv, pub, key = keys.generate_key(tmp_path, "alice", key_type=key_type)
    assert_encrypted_pem(priv, "s3cret")
    assert keys.public_key_from_file(pub) == key
    signer = Signer.from_priv_key_uri(f"encfile:{priv}", key, keys.secrets_handler())
    key.verify_signature(signer.sign(b"payload"), b"payload")


def test_keyid_matches_securesystemslib(tmp_path: Path) -> None:
    signer = CryptoSigner.generate_ed25519()
    assert keys.keyid_of(signer.public_key.to_dict()) == signer.public_key.keyid


def test_wrong_passphrase_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    priv, _, key = keys.generate_key(tmp_path, "alice")
    keys.forget_secrets()
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", "wrong")
    with pytest.raises(KeyError_, match="wrong passphrase"):
        keys.load_signer(f"encfile:{priv}", key)


def test_passphrase_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTA_KEY_PASSPHRASE")
    secret = tmp_path / "pass"
    secret.write_text("from-a-file\n")
    secret.chmod(0o600)
    monkeypatch.setenv("OTA_KEY_PASSPHRASE_FILE", str(secret))
    assert keys.read_secret("passphrase") == "from-a-file"


def test_key_file_of_another_key_is_refused(tmp_path: Path) -> None:
    priv_a, _, _ = keys.generate_key(tmp_path, "alice")
    _, _, key_b = keys.generate_key(tmp_path, "bob")
    with pytest.raises(KeyError_, match="not the private key"):
        keys.load_signer(f"encfile:{priv_a}", key_b)


def test_find_signer_picks_the_matching_key_and_refuses_strangers(tmp_path: Path) -> None:
    priv_a, _, key_a = keys.generate_key(tmp_path, "alice")
    _, _, key_b = keys.generate_key(tmp_path, "bob")
    priv_c, _, _ = keys.generate_key(tmp_path, "carol")
    candidates = {key_b.keyid: key_b, key_a.keyid: key_a}
    assert keys.find_signer(f"encfile:{priv_a}", candidates).public_key == key_a
    with pytest.raises(KeyError_, match="not one of this role's keys"):
        keys.find_signer(f"encfile:{priv_c}", candidates)


def test_missing_key_file(tmp_path: Path) -> None:
    _, _, key = keys.generate_key(tmp_path, "alice")
    with pytest.raises(KeyError_, match="not found"):
        keys.load_signer(f"encfile:{tmp_path}/nope.key", key)


@pytest.mark.parametrize("content", ["", "{}", '{"keytype": "ed25519"}', "not json"])
def test_malformed_public_key_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "k.pub"
    path.write_text(content)
    with pytest.raises(BadInputError, match="not a public key file"):
        keys.public_key_from_file(path)


def test_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    priv, _, _ = keys.generate_key(tmp_path, "alice")
    before = priv.read_bytes()
    with pytest.raises(BadInputError, match="exists already"):
        keys.generate_key(tmp_path, "alice")
    assert priv.read_bytes() == before
