"""Test support, not tests, one module a subject: real servers (a ``facesvc serve`` process, a
throwaway PostgreSQL), /proc measurements of a process tree, gates that hold a model call
mid-request, the evaluation data (``data``), the in-process API's helpers (``api``: keys, users
with faces, the problem+json check), the deployment files and their parsers (``deploy_files``,
``parsers``, ``nginx``; bench/replicas_nginx.py uses ``nginx`` too), and helpers of single
subjects (``gallery``, ``liveness_frames``, ``sql``, ``manifests``, ``onnx_graphs``).

``server_process`` and ``procfs`` use only the standard library and ``facesvc``, so the bench
scripts share them; the rest are pytest helpers and fixtures. Test modules and conftests import
from here explicitly; no test module imports another.
"""
