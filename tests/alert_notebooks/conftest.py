"""The notebooks here are run by tests/test_alerts.py through `homelab run`; nbval leaves them alone (one fails)."""

collect_ignore_glob = ["*.ipynb"]
