"""Property tests of the static path grammar: whatever the request path, what the server would
open is a plain name below its folder, or nothing."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from repository.server.static import BadPath, metadata_name, target_parts

ALPHABET = st.sampled_from([*"ab01._-~+/%\\:;?#@ \x00", "%2e", "%2f", "%5c", "%00", ".."])
RAW = st.lists(ALPHABET, max_size=40).map("".join)
SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")


@settings(max_examples=400, deadline=None)
@given(RAW)
def test_metadata_names_never_leave_the_folder(raw: str) -> None:
    try:
        name, _, _ = metadata_name(raw)
    except (BadPath, UnicodeDecodeError):
        return
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".")
    assert name == "timestamp.json" or re.match(r"^[1-9][0-9]*\.[^/]+\.json$", name)


@settings(max_examples=400, deadline=None)
@given(RAW)
def test_target_paths_are_plain_segments(raw: str) -> None:
    try:
        parts, target_path = target_parts(raw)
    except BadPath:
        return
    assert parts and all(SAFE_SEGMENT.match(p) for p in parts)
    assert ".." not in parts and "." not in parts
    assert "/".join(parts) == raw  # nothing decoded, nothing normalised
    assert not target_path.startswith("/")
