"""The one exception type users see: a single line naming the bad value and what is allowed."""


class CapreseError(ValueError):
    """Bad input or an unsupported model. The message is one line, shown as is by the CLI."""
