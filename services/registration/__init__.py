"""Registration: owns persons and exclusions (the exclusion aggregate, from request to end), the one
running exclusion per identifier, and the pointers that find them by identifier and by cause."""
