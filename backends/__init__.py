"""Backends: implementations of the RTRRL step for one framework each.

Installed as ``rtrrl.backends`` (the folder is ``backends/`` at the top of the repository).
Importing this package is cheap on purpose: each backend module imports its framework, so
backends are only imported when :func:`rtrrl.use` resolves them.
"""
