"""Verification: owns verifications and their submissions: proves a request comes from the person
(one-time code or identity document) before registration lets it take effect."""
