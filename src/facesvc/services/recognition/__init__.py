"""Verification (1:1), identification (1:N with "unknown") and comparison of two photos:
the service and its results (service.py), the thresholds it decides with (decisions.py), and
the lockout after failed verifications (lockout.py)."""
