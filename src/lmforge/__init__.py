"""lmforge: from a raw web crawl to an aligned chat assistant, one thin stage per Hugging Face library."""

from lmforge.lib.notices import quiet_notices


__version__ = "0.1.0"

quiet_notices()  # before any stage imports the libraries that log them


class LmforgeError(Exception):
    """A problem with the user's input (recipe, file, row): the CLI prints it without a traceback."""
