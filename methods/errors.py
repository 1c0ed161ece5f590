"""The one exception family every package raises for bad input.

A stage CLI catches :class:`NstError` and prints its message (which names the offending file or key)
instead of a traceback. It derives from :class:`ValueError` so library callers can catch it generically.
"""

from __future__ import annotations


class NstError(ValueError):
    """Bad input, bad configuration or an unusable file; the message names it and says what is wrong."""


class EncoderWeightsError(NstError):
    """Encoder weights cannot be found, read or matched to the VGG-19 architecture."""
