"""Benchmarks of the whole stack (more than one service at a time); not shipped in the image."""
