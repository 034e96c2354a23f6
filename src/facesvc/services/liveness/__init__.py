"""Active liveness: challenge-response sessions checked on the face mesh (see checker.py)."""
