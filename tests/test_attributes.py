"""SetAttributes: a result set's description, user attributes and lock, alone."""

from __future__ import annotations

import pytest

from epyclab.notebooks.attributes import SetAttributes


def test_a_default_description_says_when_the_set_was_made():
    assert SetAttributes().description().startswith("Result set created at ")
    assert SetAttributes("mine").description() == "mine"


def test_attributes_keep_their_type_and_order():
    a = SetAttributes("d")
    a.set("n", 3)
    a.set("x", 0.5)
    a.set("s", "text")
    assert a.names() == ["n", "x", "s"]
    assert a.get("n") == 3 and type(a.get("n")) is int and type(a.get("x")) is float
    assert "n" in a and "m" not in a
    copy = a.copy()
    copy["n"] = 4
    assert a.get("n") == 3
    a.delete("n")
    assert "n" not in a
    with pytest.raises(KeyError):
        a.get("n")
    with pytest.raises(KeyError):
        a.delete("n")
    with pytest.raises(TypeError, match="strings"):
        a.set(1, "x")


def test_the_version_changes_at_every_change_but_not_when_restored_from_a_file():
    a = SetAttributes("d")
    seen = [a.version()]
    for change in (lambda: a.setDescription("e"), lambda: a.set("k", 1), lambda: a.delete("k"), a.lock):
        change()
        seen.append(a.version())
    assert len(set(seen)) == 5 and a.isLocked()
    a.restore("from file", False, {"k": 2})
    assert a.version() == seen[-1]
    assert (a.description(), a.isLocked(), a.copy()) == ("from file", False, {"k": 2})
