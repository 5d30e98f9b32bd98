"""convdiff 0.1's imports keep working, each with a DeprecationWarning naming the new import."""

from __future__ import annotations

import importlib
import sys

import pytest

from convdiff.compat import OLD_HOMES


@pytest.mark.parametrize("old", sorted(OLD_HOMES))
def test_old_import_works_and_warns(old: str) -> None:
    new, names = OLD_HOMES[old]
    sys.modules.pop(old, None)  # the warning comes with the first import
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated; use `{new}`"):
        module = importlib.import_module(old)
    for name, home in names.items():
        assert getattr(module, name) is getattr(importlib.import_module(home), name)


def test_the_readme_import_of_run_is_the_api_run() -> None:
    """`from convdiff.run import run` (README of 0.1) is the run with its follow-ups."""
    import convdiff.api

    sys.modules.pop("convdiff.run", None)
    with pytest.warns(DeprecationWarning):
        from convdiff.run import run
    assert run is convdiff.api.run
