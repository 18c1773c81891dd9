"""What the notebooks show: widgets, the JupyterLab launcher, tables and charts."""
