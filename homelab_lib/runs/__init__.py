"""Runs of the runbooks.

Papermill execution, the hash-chained archive, the run lock, the archive web page, the rehearsal.
"""
