"""The pure core: stdlib and numpy only. No I/O, no clock reads, no logging, no environment.

Every decision the worker makes (how a message decodes, when a batch closes, which results may leave, what a
model card means) lives here and takes values (including ``now``) and returns values, so that it can be tested
exhaustively in milliseconds. ``tests/unit/test_core_is_pure.py`` enforces the import rule.
"""
