"""Evaluation on public data (LFW ...), through the same pipeline the API uses."""


class EvaluationError(Exception):
    """An input the evaluation needs is missing or unusable (the command line exits 2)."""
