"""Blocking: owns its projection of exclusions, the accounts it has seen and its view snapshots
(``blocking_*``), and answers every account event with a decision from its in-memory view."""
