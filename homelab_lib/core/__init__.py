"""The floor everything stands on.

The error tree, typed plans, the runbook contract, the Clock, progress, secret references and the
one table printer (tables).
"""
