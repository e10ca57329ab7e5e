"""What every Selfex service uses: contracts, topics, settings and plumbing; no business rules."""
