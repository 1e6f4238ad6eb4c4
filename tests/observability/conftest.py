"""The whole pipeline in one event loop (tests/e2e/conftest.py), for the span-link tests."""

from e2e.conftest import pipeline  # noqa: F401  (a fixture, used by name)
