"""Helpers shared by the test areas (``tests/`` is on sys.path: ``from support.waiting import eventually``)."""
