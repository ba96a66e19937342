"""LTX API keys in memory: never printed, never saved.

A key reaches this package two ways, the ``LTX_API_KEY`` environment variable or ``api_key=`` of
`LTXAPIPromptEncoder`; both are treated alike. The key is held in an `APIKey` whose ``repr``/``str`` are
``***`` (so a traceback that prints frame locals, e.g. ``rich.traceback`` with ``show_locals=True``, shows
no key), and every live encoder's key is known to `contains_api_key` / `redact`, which
`save_conditioning` and the prompt cache use to keep keys out of files.
"""

from __future__ import annotations

import os
import weakref

__all__ = ["API_KEY_ENV", "APIKey", "contains_api_key", "redact"]

API_KEY_ENV = "LTX_API_KEY"
# Shorter "keys" are not searched for in text (a 3-letter test key would match ordinary words).
_MIN_SEARCHED_LENGTH = 8


class APIKey:
    """An API key that does not show itself: ``repr``/``str`` give ``***``; `reveal` gives the text.

    Args:
        value: the key; ``None`` or empty means: take ``LTX_API_KEY`` from the environment.

    Raises:
        ValueError: no key at all, or a key containing control characters (it would break the HTTP header).
    """

    __slots__ = ("_value", "__weakref__")

    def __init__(self, value: str | None = None):
        try:
            self._value = str(value if value is not None else os.environ.get(API_KEY_ENV, "")).strip()
        finally:
            value = None  # keep the raw key out of this frame's locals if a traceback is printed
        if not self._value:
            raise ValueError(
                f"no LTX API key: pass api_key= or set the {API_KEY_ENV} environment variable "
                "(keys are issued at https://console.ltx.video)"
            )
        if not self._value.isprintable():
            self._value = ""
            raise ValueError(f"the LTX API key contains control characters; check {API_KEY_ENV} or api_key=")
        _LIVE[self] = None

    def reveal(self) -> str:
        """The key itself (only for the ``Authorization`` header)."""
        return self._value

    def __repr__(self) -> str:
        return "APIKey(***)"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("an API key is not picklable")


# Keys of the encoders alive in this process (weak: a key is forgotten with its last holder).
_LIVE: "weakref.WeakKeyDictionary[APIKey, None]" = weakref.WeakKeyDictionary()


def _known_keys() -> list[str]:
    keys = [k._value for k in list(_LIVE.keys())]
    keys.append(os.environ.get(API_KEY_ENV, "").strip())
    return sorted({k for k in keys if len(k) >= _MIN_SEARCHED_LENGTH}, key=len, reverse=True)


def contains_api_key(text: str) -> bool:
    """Whether `text` contains ``LTX_API_KEY`` or the key of any live `LTXAPIPromptEncoder`."""
    return any(key in text for key in _known_keys())


def redact(text: str, *extra: APIKey) -> str:
    """`text` with every known key (and the `extra` ones, whatever their length) replaced by ``***``."""
    keys = _known_keys() + [k._value for k in extra if k._value]
    for key in sorted(set(keys), key=len, reverse=True):
        text = text.replace(key, "***")
    return text
