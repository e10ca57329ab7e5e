"""Verification: proves a portal request comes from the person (one-time code or identity document)."""
