from __future__ import annotations

from pathlib import Path

import pytest

from repository.errors import BadInputError
from repository.targetfiles import published_path, store_target_file, validate_target_path

BAD = {
    "empty": "",
    "absolute": "/firmware/a.bin",
    "dotdot": "firmware/../a.bin",
    "dot": "firmware/./a.bin",
    "empty-segment": "firmware//a.bin",
    "trailing-slash": "firmware/",
    "backslash": "firmware\\a.bin",
    "nul": "firmware/a\x00.bin",
    "newline": "firmware/a\n.bin",
    "percent-encoded": "firmware/%2e%2e/a.bin",
    "space": "firmware/a b.bin",
    "hidden": "firmware/.a.bin",
    "too-long": "a/" * 200 + "b",
}


@pytest.mark.parametrize("path", BAD.values(), ids=BAD.keys())
def test_unsafe_target_paths_are_refused(path: str) -> None:
    with pytest.raises(BadInputError):
        validate_target_path(path)


@pytest.mark.parametrize("path", ["fw.bin", "firmware/model-x/fw-1.2.3.bin", "a/b/c_d+e.delta"])
def test_safe_target_paths_pass(path: str) -> None:
    assert validate_target_path(path) == path


def test_store_names_the_copy_by_its_hash(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    tf = store_target_file(tmp_path / "targets", src, "firmware/m/fw.bin", {"k": 1})
    sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert tf.hashes == {"sha256": sha}
    assert tf.length == 3
    assert tf.custom == {"k": 1}
    assert (
        published_path(tmp_path / "targets", tf)
        == tmp_path / "targets/firmware/m" / f"{sha}.fw.bin"
    )
    assert published_path(tmp_path / "targets", tf).read_bytes() == b"abc"
    assert [p.name for p in (tmp_path / "targets/firmware/m").iterdir()] == [f"{sha}.fw.bin"]
