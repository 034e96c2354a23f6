"""Evaluation on public data (LFW ...), through the same pipeline the API uses.

Each ``facesvc eval`` command calls ``evaluate_<name>`` in its evaluation's own module, beside
the ``run_<name>`` it orchestrates: it runs the evaluation through the service's pipeline,
writes its plots and raw arrays beside the report, and returns the report (a JSON document)
with what produced it; ``<name>_summary_line`` turns a report into the command's one line.
Every ``evaluate_<name>`` takes the command line that reproduces the run (``command``); an
input the evaluation cannot use raises EvaluationError.
"""


class EvaluationError(Exception):
    """An input the evaluation needs is missing or unusable (the command line exits 2)."""
