"""Parley's front door: the `parley` command (`parley.cli`, also `python -m parley`).

It sits above every other package; the leaf modules that all packages share live in `common/`.
"""
