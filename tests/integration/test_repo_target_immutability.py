"""`ota-repo add-target` never changes the bytes behind a published target path: a path that is
listed, or was listed before with other bytes (removed, then re-added), is refused and nothing
is published."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.repo import assert_one_line_error, custom_json, ota_repo, published

PATH = "firmware/model-x/fw-1.0.0.bin"


def _add(repo: Path, fw: Path, *, check: bool = True):  # type: ignore[no-untyped-def]
    return ota_repo(
        repo, "add-target", str(fw), "--path", PATH, "--custom", custom_json("1.0.0"), check=check
    )


def test_listed_path_with_other_bytes_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ota_repo(repo, "init", "--dev")
    first, other = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(b"honest image" * 100)
    other.write_bytes(b"other image" * 100)
    _add(repo, first)
    before = published(repo)
    proc = _add(repo, other, check=False)
    assert_one_line_error(proc, PATH, "published already")
    assert published(repo) == before


def test_listed_path_with_the_same_bytes_is_refused_as_published(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ota_repo(repo, "init", "--dev")
    fw = tmp_path / "a.bin"
    fw.write_bytes(b"honest image" * 100)
    _add(repo, fw)
    before = published(repo)
    proc = _add(repo, fw, check=False)
    assert_one_line_error(proc, PATH, "published already")
    assert published(repo) == before


def test_removed_path_cannot_come_back_with_other_bytes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ota_repo(repo, "init", "--dev")
    first, other = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(b"honest image" * 100)
    other.write_bytes(b"other image" * 100)
    _add(repo, first)
    ota_repo(repo, "remove-target", PATH)
    before = published(repo)
    proc = _add(repo, other, check=False)
    assert_one_line_error(proc, PATH, "was published before with other bytes")
    assert published(repo) == before
    # the same bytes may be listed again: devices holding them see the same image
    _add(repo, first)
