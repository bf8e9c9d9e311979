"""The one exception type users see: a single line naming the bad value and what is allowed.

The CLI turns it, and the families of errors it stands in for, into one line on stderr and one
exit code each (`caprese --debug VERB ...` or CAPRESE_DEBUG=1 shows the traceback instead):

    EXIT_BAD_INPUT   2    CapreseError (and argparse's usage errors): a value that is not allowed
    EXIT_DATA       65    a damaged file: unparsable JSON, a truncated safetensors file
    EXIT_IO         74    the file system refused: unwritable --out, full disk, missing file
    EXIT_INTERRUPTED 130  Ctrl-C (SIGINT), like a shell
"""

EXIT_BAD_INPUT = 2
EXIT_DATA = 65  # EX_DATAERR
EXIT_IO = 74  # EX_IOERR
EXIT_INTERRUPTED = 130


class CapreseError(ValueError):
    """Bad input or an unsupported model. The message is one line, shown as is by the CLI."""


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's message squeezed onto one line (first line, whitespace collapsed, capped)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
