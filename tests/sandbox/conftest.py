"""Fixtures of the sandbox tests (the helpers live in sandbox_testlib)."""

from sandbox_testlib import backend, loop, run  # noqa: F401  (re-exported fixtures)
