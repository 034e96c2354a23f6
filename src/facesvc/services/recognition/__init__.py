"""Verification (1:1), identification (1:N with "unknown") and comparison of two photos."""
