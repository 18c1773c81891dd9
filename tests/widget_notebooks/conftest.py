"""The notebook here is run by tests/test_widgets.py and tests/test_browser.py; nbval leaves it alone."""

collect_ignore_glob = ["*.ipynb"]
