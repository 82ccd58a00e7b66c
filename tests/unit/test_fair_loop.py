"""fair_loop: on a loop kept busy by bulk tasks, a task serving a client gets through its steps after a bounded
number of bulk callbacks, not after every bulk callback of every turn; no callback is lost or reordered within its
lane; a client task that never stops yielding does not starve the bulk work; tasks a client task creates are bulk."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tensorfleet_desktop.controller import fair_loop


async def _bulk_steps_while(client: Callable[[], Awaitable[None]], bulk_tasks: int, fair: bool) -> int:
    """How many bulk steps ran while `client` went through its steps, with `bulk_tasks` tasks always ready."""
    if fair:
        assert fair_loop.install()
    count = 0
    stop = False

    async def bulk() -> None:
        nonlocal count
        while not stop:
            count += 1
            await asyncio.sleep(0)

    workers = [asyncio.create_task(bulk()) for _ in range(bulk_tasks)]
    await asyncio.sleep(0)

    async def served() -> int:
        fair_loop.serve_first()
        before = count
        await client()
        return count - before

    try:
        return await asyncio.create_task(served())
    finally:
        stop = True
        await asyncio.gather(*workers)


async def _ten_steps() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_a_client_task_waits_for_a_bounded_number_of_bulk_steps() -> None:
    plain = asyncio.run(_bulk_steps_while(_ten_steps, 500, fair=False))
    fair = asyncio.run(_bulk_steps_while(_ten_steps, 500, fair=True))
    assert plain >= 10 * 500 - 500  # each step waited for a whole turn of every bulk task
    assert fair <= 12 * fair_loop.BULK_PER_TURN, (fair, plain)


def test_no_callback_is_lost_and_each_lane_keeps_its_order() -> None:
    async def main() -> tuple[list[int], list[int]]:
        assert fair_loop.install()
        bulk: list[int] = []
        client: list[int] = []
        loop = asyncio.get_running_loop()
        for i in range(1000):
            loop.call_soon(bulk.append, i)
        ended = asyncio.Event()
        loop.call_soon(ended.set)  # bulk too: after the 1,000

        async def served() -> None:
            fair_loop.serve_first()
            for i in range(50):
                client.append(i)
                await asyncio.sleep(0)

        await asyncio.create_task(served())
        await ended.wait()
        return bulk, client

    bulk, client = asyncio.run(main())
    assert bulk == list(range(1000))
    assert client == list(range(50))


def test_a_client_task_that_keeps_yielding_does_not_starve_bulk_work() -> None:
    async def main() -> int:
        assert fair_loop.install()
        done = 0
        stop = False

        async def spinning_client() -> None:
            fair_loop.serve_first()
            while not stop:  # noqa: ASYNC110 - a client that never stops yielding is the point
                await asyncio.sleep(0)

        async def bulk() -> None:
            nonlocal done
            for _ in range(200):
                await asyncio.sleep(0)
                done += 1

        spinner = asyncio.create_task(spinning_client())
        await asyncio.wait_for(asyncio.gather(*(bulk() for _ in range(20))), timeout=10)
        stop = True
        await spinner
        return done

    assert asyncio.run(main()) == 20 * 200


def test_the_tasks_a_client_task_creates_are_bulk() -> None:
    async def main() -> tuple[int, int]:
        assert fair_loop.install()
        loop = asyncio.get_running_loop()
        ready = fair_loop._ready_of(loop)
        assert ready is not None
        fair_loop.serve_first()
        inner = asyncio.create_task(asyncio.sleep(0))
        served = asyncio.current_task() in ready.clients
        await inner
        return int(served), int(inner in ready.clients)

    assert asyncio.run(main()) == (1, 0)


def test_a_loop_with_its_own_task_factory_is_left_alone() -> None:
    async def main() -> bool:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(lambda loop, coro, **kw: asyncio.Task(coro, loop=loop, **kw))
        return fair_loop.install()

    assert asyncio.run(main()) is False


@pytest.mark.parametrize("fair", [False, True])
def test_serve_first_without_install_or_task_is_harmless(fair: bool) -> None:
    async def main() -> None:
        if fair:
            fair_loop.install()
        fair_loop.serve_first()
        await asyncio.sleep(0)

    asyncio.run(main())


async def test_the_task_factory_takes_what_create_task_passes() -> None:
    """Python 3.13.3 passes name= to a task factory, 3.14 other keywords: a task is still made, named."""
    assert fair_loop.install()
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    assert factory is not None

    async def nothing() -> None:
        return None

    task = factory(loop, nothing(), name="scheduler", context=None)  # type: ignore[call-arg]
    await task
    assert task.get_name() == "scheduler"


async def test_the_grpc_server_s_own_tasks_are_the_ones_marked_as_servers() -> None:
    """app.py marks grpc.aio's server tasks (not others created while it starts) by their coroutines' names."""
    import grpc

    from tensorfleet_desktop.controller.app import _GRPC_SERVER_TASK, _coroutine_name

    server = grpc.aio.server()
    server.add_insecure_port("127.0.0.1:0")
    before = asyncio.all_tasks()
    other = asyncio.create_task(asyncio.sleep(0.01), name="not-a-server")
    await server.start()
    try:
        new = asyncio.all_tasks() - before
        marked = {t.get_name() for t in new if _GRPC_SERVER_TASK.match(_coroutine_name(t))}
        assert marked and "not-a-server" not in marked and "not-a-server" in {t.get_name() for t in new}
    finally:
        await server.stop(0)
        await other


async def _first_steps_of_grpc_calls(relay: bool) -> list[bool]:
    """Whether each call's task was served first when its first interceptor ran (before any serve_first), on a
    loop kept busy by bulk tasks, with grpc.aio's tasks marked as app.py marks them (`relay`: its task per call
    too)."""
    import grpc

    from tensorfleet_desktop.controller.app import _GRPC_SERVER_TASK, _coroutine_name, clients_first

    assert fair_loop.install()
    ready = fair_loop._ready_of(asyncio.get_running_loop())
    assert ready is not None
    seen: list[bool] = []

    class Probe(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            seen.append(asyncio.current_task() in ready.clients)
            return await continuation(details)

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler("e.E", {"U": grpc.unary_unary_rpc_method_handler(echo)})
    server = grpc.aio.server(interceptors=[Probe()])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    before = asyncio.all_tasks()
    await server.start()
    new = asyncio.all_tasks() - before
    if relay:
        clients_first(new)
    else:
        fair_loop.servers(t for t in new if _GRPC_SERVER_TASK.match(_coroutine_name(t)))
    stop = False
    bulk_steps = 0

    async def bulk() -> None:
        nonlocal bulk_steps
        while not stop:
            bulk_steps += 1
            await asyncio.sleep(0)

    workers = [asyncio.create_task(bulk()) for _ in range(200)]

    def calls() -> None:  # a client in another thread, as a client in another process would be
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/e.E/U")
            for _ in range(5):
                assert call(b"x", timeout=30) == b"x"

    try:
        await asyncio.to_thread(calls)
    finally:
        stop = True
        await asyncio.gather(*workers)
        await server.stop(0)
    assert bulk_steps > 200 * 5, bulk_steps  # the calls went through a loop kept busy
    return seen


def test_a_grpc_call_s_task_is_served_first_from_its_first_step() -> None:
    """grpc.aio makes each call's task from a task of its own per call: marked as a relay (app.clients_first),
    the call's first step (its interceptors) does not wait in the bulk lane; without the relay it did."""
    assert asyncio.run(_first_steps_of_grpc_calls(relay=True)) == [True] * 5
    assert asyncio.run(_first_steps_of_grpc_calls(relay=False)) == [False] * 5
