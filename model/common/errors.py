"""User-facing errors: printed as one clear line by the CLI, never as a traceback."""


class ParleyError(Exception):
    """An expected error caused by user input or the environment (bad file, missing model, ...)."""
