"""Thin adapters, one library each: they move bytes and call libraries, and leave decisions to the core."""
