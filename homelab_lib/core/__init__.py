"""The floor everything stands on.

The error tree, typed plans, the runbook contract, the Clock, progress and secret references.
"""
