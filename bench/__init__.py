"""The benchmarks and load generators (``selfex bench decisions | http | enforcement``, ``python -m
bench.restart``): above the services, run from a clone, never shipped in the image."""
