"""`ota-repo add-target` never changes the bytes behind a published target path: a path that is
listed, or was listed before with other bytes (removed, then re-added), is refused and nothing
is published."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.repo import assert_one_line_error, custom_json, ota_repo, published

PATH = "firmware/model-x/fw-1.0.0.bin"


def _add(repo: Path, fw: Path, *, check: bool = True):  # type: ignore[no-untyped-def]
    return ota_repo(
        repo, "add-target", str(fw), "--path", PATH, "--custom", custom_json("1.0.0"), check=check
    )


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A dev repository listing PATH with the honest image; another image beside it."""
    repo = tmp_path / "repo"
    ota_repo(repo, "init", "--dev")
    first, other = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(b"honest image" * 100)
    other.write_bytes(b"other image" * 100)
    _add(repo, first)
    return repo, first, other


@pytest.mark.parametrize("again", ["other", "same"])
def test_listed_path_is_refused_with_any_bytes(site: tuple[Path, Path, Path], again: str) -> None:
    repo, first, other = site
    before = published(repo)
    proc = _add(repo, other if again == "other" else first, check=False)
    assert_one_line_error(proc, PATH, "published already")
    assert published(repo) == before


def test_removed_path_cannot_come_back_with_other_bytes(site: tuple[Path, Path, Path]) -> None:
    repo, first, other = site
    ota_repo(repo, "remove-target", PATH)
    before = published(repo)
    proc = _add(repo, other, check=False)
    assert_one_line_error(proc, PATH, "was published before with other bytes")
    assert published(repo) == before
    # the same bytes may be listed again: devices holding them see the same image
    _add(repo, first)
