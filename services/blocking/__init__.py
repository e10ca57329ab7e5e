"""Blocking: a decision for every account event, from a fast in-memory view of active exclusions."""
