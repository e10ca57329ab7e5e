"""Audit: owns ``audit_log``, the append-only, hash-chained record of every event, without raw personal data."""
