"""Parley's front door: the `parley` command (`parley.cli`) and the project-wide leaf modules.

The leaf modules (`errors`, `cache`, `audio_constants`, `paths`) import nothing of the project,
so every package may use them; `parley.cli` sits above all four packages.
"""
