"""The few leaf modules every package shares; none imports anything of the project.

    errors           ParleyError: an expected, user-caused error (one line from the CLI)
    cache            the on-disk cache root and file hashing
    audio_constants  audio rates and frame sizes, defined once
    paths            demos/, weights/ and the asterisk prompt folders
"""
