"""Token format, hashing and cursors: the pure parts of the API's access control and paging."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from guardian.api import pages, tokens
from guardian.api.tokens import Role
from guardian.errors import ConfigError


def test_a_token_splits_into_its_public_id_and_secret():
    assert tokens.split("gdn_abcdefghij_se_cr-et") == ("abcdefghij", "se_cr-et")
    for malformed in ("", "gdn_", "gdn_short_x", "xyz_abcdefghij_secret", "gdn_abcdefghij_", "Bearer abc"):
        assert tokens.split(malformed) is None, malformed


def test_the_hash_depends_on_salt_and_secret_and_the_fingerprint_hides_the_token():
    assert tokens.digest(b"salt", "s") != tokens.digest(b"tlas", "s") != tokens.digest(b"salt", "t")
    assert len(tokens.digest(b"salt", "s")) == 32
    token = "gdn_abcdefghij_topsecret"
    assert "topsecret" not in tokens.fingerprint(token) and len(tokens.fingerprint(token)) == 12


def test_roles_are_ordered_and_parsed():
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    assert Role.parse("Operator") is Role.OPERATOR and Role.ADMIN.label == "admin"
    with pytest.raises(ConfigError, match="viewer, operator or admin"):
        Role.parse("root")


def test_a_cursor_round_trips_and_a_forged_one_is_a_400():
    key = ["2026-11-30T05:00:00+00:00", "b1c1"]
    assert pages.decode(pages.encode(key), 2) == key
    for forged in ("!!!", pages.encode([1]), pages.encode({"a": 1})):
        with pytest.raises(HTTPException) as refused:
            pages.decode(forged, 2)
        assert refused.value.status_code == 400


def test_a_page_says_whether_there_is_more():
    assert pages.page([1, 2, 3], 2, lambda i: (i,)).model_dump() == {"items": [1, 2], "next_cursor": pages.encode([2])}
    assert pages.page([1, 2], 2, lambda i: (i,)).next_cursor is None
