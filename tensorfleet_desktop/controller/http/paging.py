"""Cursor pagination (`limit` and an opaque `cursor`) and the page-number form (`page`, `limit`) over a list
already in its order. A cursor names the last item a client saw, not an offset, so a job submitted between two
pages never shows up twice or pushes another out of sight."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tensorfleet_agent.core.errors import ValidationError

T = TypeVar("T")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
#: The longest cursor any list hands out, with room to spare (an agent's key spells its name and its mDNS name).
MAX_CURSOR = 4096
NOT_A_CURSOR = "is not a cursor this API handed out (use next_cursor as given)"


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int  # items in the whole list (after filters)
    limit: int
    next_cursor: str | None  # None on the last page
    page: int | None  # set when asked by page number


def encode_cursor(key: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    """The key a cursor names. Anything else a client sends as one (too long, not base64, not JSON, nested past
    what the parser takes) is a ValidationError naming `cursor`."""
    if len(cursor) > MAX_CURSOR:
        raise ValidationError("cursor", f"{NOT_A_CURSOR}: longer than {MAX_CURSOR} characters")
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, RecursionError, binascii.Error):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValidationError("cursor", NOT_A_CURSOR) from None
    if not isinstance(key, list):
        raise ValidationError("cursor", NOT_A_CURSOR)
    return key


def _check(limit: int, cursor: str | None, page: int | None) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError("limit", f"must be between 1 and {MAX_LIMIT}, got {limit}")
    if cursor and page is not None:
        raise ValidationError("cursor", "give either cursor or page, not both")
    if page is not None and page < 1:
        raise ValidationError("page", f"must be >= 1, got {page}")


def paginate(
    items: Sequence[T],
    key: Callable[[T], Sequence[Any]],
    limit: int,
    cursor: str | None = None,
    page: int | None = None,
) -> Page[T]:
    """One page of `items`, which are sorted by `key` (unique per item), descending. `cursor` (from an earlier
    page's next_cursor) continues after that item; `page` (1-based) is the page-number form; not both."""
    _check(limit, cursor, page)
    start = 0
    if cursor:
        after = decode_cursor(cursor)
        start = len(items)
        for i, item in enumerate(items):
            try:
                older = list(key(item)) < after
            except (TypeError, RecursionError):
                raise ValidationError("cursor", "is not a cursor of this list") from None
            if older:
                start = i
                break
    elif page is not None:
        start = (page - 1) * limit
    chunk = list(items[start : start + limit])
    more = start + limit < len(items)
    return Page(chunk, len(items), limit, encode_cursor(key(chunk[-1])) if more and chunk else None, page)


def paginate_index(
    total: int,
    key: Callable[[T], Sequence[Any]],
    limit: int,
    cursor: str | None,
    page: int | None,
    at: Callable[[int, int], list[T]],
    after: Callable[[list[Any], int], tuple[int, list[T]] | None],
    everything: Callable[[], Sequence[T]],
) -> Page[T]:
    """The page `paginate` gives of a list of `total` items, read from an index that holds them in order instead
    of the whole list: `at(start, size)` gives items start .. start + size; `after(cursor key, size)` where the
    items older than a cursor's key start and the first `size` of them, or None for a key the index cannot place
    (then `everything()` is paged as `paginate` does, its answers and its errors)."""
    _check(limit, cursor, page)
    if cursor:
        found = after(decode_cursor(cursor), limit)
        if found is None:
            return paginate(everything(), key, limit, cursor, page)
        start, chunk = found
    else:
        start = (page - 1) * limit if page is not None else 0
        chunk = at(start, limit)
    more = start + limit < total
    return Page(chunk, total, limit, encode_cursor(key(chunk[-1])) if more and chunk else None, page)
