"""Registration: owns the exclusion aggregate, from request to end."""
