"""Test support, not tests: real servers (a ``facesvc serve`` process, a throwaway PostgreSQL),
/proc measurements of a process tree, and gates that hold a model call mid-request.

``server_process`` and ``procfs`` use only the standard library and ``facesvc``, so the bench
scripts share them; ``servers``, ``pg`` and ``gates`` are pytest helpers and fixtures.
"""
