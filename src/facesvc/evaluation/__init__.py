"""Evaluation on public data (LFW ...), through the same pipeline the API uses."""
