"""The error type that the CLI turns into one clear line and a non-zero exit code."""


class UserFacingError(Exception):
    """Bad input from the user (file, checkpoint, source, argument); the message is shown as is."""
