"""Ingest's pure core: what records a webhook becomes, and what a send request means."""
