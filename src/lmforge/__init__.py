"""lmforge: from a raw web crawl to an aligned chat assistant, one thin stage per Hugging Face library."""

__version__ = "0.1.0"


class LmforgeError(Exception):
    """A problem with the user's input (recipe, file, row): the CLI prints it without a traceback."""
