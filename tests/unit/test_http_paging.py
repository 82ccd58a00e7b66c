"""Cursor and page-number pagination of the HTTP API (controller/http/paging.py): a client walking a list with
next_cursor sees every item once, even when new items arrive at the top meanwhile; bad input names its field."""

from __future__ import annotations

import base64

import pytest

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_desktop.controller.http.paging import MAX_CURSOR, MAX_LIMIT, decode_cursor, encode_cursor, paginate

Job = tuple[float, str]  # (submitted at, id): the order of a job list, newest first


def key(job: Job) -> tuple[float, str]:
    return job


def jobs(n: int, start: float = 0.0) -> list[Job]:
    """n jobs, newest first; two share each timestamp so the id must break ties."""
    return sorted(((start + i // 2, f"job-{i:03d}") for i in range(n)), reverse=True)


def walk(items: list[Job], limit: int) -> list[Job]:
    seen: list[Job] = []
    cursor = None
    while True:
        page = paginate(items, key, limit, cursor)
        seen += page.items
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


def test_a_cursor_round_trips_the_key_it_names() -> None:
    for k in ([1712345678.25, "job-7"], [0, ""], ["ünïcode/+=", 3]):
        cursor = encode_cursor(k)
        assert "=" not in cursor and "/" not in cursor and "+" not in cursor  # URL-safe as a query value
        assert decode_cursor(cursor) == k


@pytest.mark.parametrize("limit", [1, 3, 7, 50])
def test_walking_with_next_cursor_yields_every_item_once_in_order(limit: int) -> None:
    items = jobs(23)
    assert walk(items, limit) == items


def test_the_last_page_has_no_next_cursor_and_counts_the_whole_list() -> None:
    items = jobs(5)
    first = paginate(items, key, 3)
    assert (len(first.items), first.total, first.limit, first.page) == (3, 5, 3, None)
    assert first.next_cursor is not None
    last = paginate(items, key, 3, first.next_cursor)
    assert last.items == items[3:] and last.next_cursor is None and last.total == 5
    exact = paginate(items, key, 5)
    assert exact.items == items and exact.next_cursor is None
    empty = paginate(list[Job](), key, 10)
    assert (empty.items, empty.total, empty.next_cursor) == ([], 0, None)


def test_items_inserted_at_the_top_between_pages_are_never_repeated_or_skipped() -> None:
    items = jobs(10)
    first = paginate(items, key, 4)
    # three jobs submitted while the client reads page one: an offset would show items[2:4] again
    newer = sorted(((100.0 + i, f"new-{i}") for i in range(3)), reverse=True)
    second = paginate(newer + items, key, 4, first.next_cursor)
    assert second.items == items[4:8]
    assert second.total == 13
    third = paginate(newer + items, key, 4, second.next_cursor)
    assert third.items == items[8:] and third.next_cursor is None
    assert first.items + second.items + third.items == items


def test_a_cursor_whose_item_was_deleted_continues_after_where_it_stood() -> None:
    items = jobs(9)
    first = paginate(items, key, 3)
    gone = items[2]  # the page's last item, deleted before the next page is asked
    rest = paginate([j for j in items if j != gone], key, 3, first.next_cursor)
    assert rest.items == items[3:6]


def test_the_page_number_form() -> None:
    items = jobs(25)
    pages = [paginate(items, key, 10, page=n) for n in (1, 2, 3, 4)]
    assert [p.items for p in pages] == [items[:10], items[10:20], items[20:], []]
    assert [p.page for p in pages] == [1, 2, 3, 4]
    assert all(p.total == 25 and p.limit == 10 for p in pages)
    assert pages[0].next_cursor is not None  # a page-number client may switch to cursors
    assert pages[2].next_cursor is None and pages[3].next_cursor is None
    assert paginate(items, key, 10, pages[0].next_cursor).items == items[10:20]


def field_of(call: object) -> tuple[str, str]:
    assert callable(call)
    with pytest.raises(ValidationError) as raised:
        call()
    return raised.value.field, raised.value.message


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1])
def test_a_limit_out_of_range_names_limit(limit: int) -> None:
    field, message = field_of(lambda: paginate(jobs(3), key, limit))
    assert field == "limit" and str(MAX_LIMIT) in message and str(limit) in message


@pytest.mark.parametrize("page", [0, -3])
def test_a_page_below_one_names_page(page: int) -> None:
    field, message = field_of(lambda: paginate(jobs(3), key, 10, page=page))
    assert field == "page" and str(page) in message


def test_cursor_and_page_together_are_refused() -> None:
    cursor = paginate(jobs(5), key, 2).next_cursor
    assert field_of(lambda: paginate(jobs(5), key, 2, cursor, page=2))[0] == "cursor"


@pytest.mark.parametrize(
    "cursor",
    [
        "%%%not-base64",  # not base64
        "_w",  # base64 of a byte that is not UTF-8
        encode_cursor([1])[:-2] + "!!",  # damaged
        "eyJhIjoxfQ",  # {"a":1}: JSON, not a key
        "bnVsbA",  # null
        base64.urlsafe_b64encode(b"[" * 3000).decode(),  # nested past the JSON parser's recursion
        "A" * (MAX_CURSOR + 1),  # longer than any cursor handed out
    ],
)
def test_a_cursor_this_api_did_not_hand_out_names_cursor(cursor: str) -> None:
    field, message = field_of(lambda: paginate(jobs(5), key, 2, cursor))
    assert field == "cursor" and "next_cursor" in message


def test_a_cursor_of_another_list_names_cursor() -> None:
    """A key of the wrong shape (a model list's cursor sent to the job list) is a 422, never a 500."""
    foreign = encode_cursor([{"name": "m"}, 1])
    assert field_of(lambda: paginate(jobs(5), key, 2, foreign))[0] == "cursor"
