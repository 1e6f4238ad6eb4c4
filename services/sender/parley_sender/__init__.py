"""Parley's sender: every reply and template delivered within Meta's rules and limits, exactly once."""
