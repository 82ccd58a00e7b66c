"""Client: the blocking SDK, AsyncClient's API run on a private event loop in a thread of its own.

Each method is AsyncClient's, wrapped (`jobs = _blocking(AsyncClient.jobs)`): one copy of every call, and the
caller's thread only waits for the answer. Streams become ordinary iterators, one item per wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from tensorfleet_desktop.client.aio import AsyncClient
from tensorfleet_desktop.client.errors import TensorFleetError

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread; `run` hands it a coroutine and waits for the result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        # made now, not on first use, so a process that drops privileges after importing can still start threads
        self.loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="tensorfleet-client-io"))
        self._thread = threading.Thread(target=self.loop.run_forever, name="tensorfleet-client", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, R]) -> R:
        if self.loop.is_closed():
            coro.close()
            raise TensorFleetError("this client is closed")
        future: Future[R] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. Ctrl-C in the caller's thread: stop the call too
            raise

    def stop(self, last: Coroutine[Any, Any, None] | None = None) -> None:
        """Run `last` (closing the channel), then end the loop and its thread. Safe to call twice."""
        if self.loop.is_closed():
            if last is not None:
                last.close()
            return
        if last is not None and self._thread is not threading.current_thread():
            with contextlib.suppress(Exception):  # closing a broken channel is no error of the caller's
                self.run(last)
        elif last is not None:
            last.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not threading.current_thread():
            self._thread.join()
            self.loop.close()


class _blocking(Generic[P, R]):
    """An AsyncClient coroutine method as a blocking method of Client."""

    def __init__(self, method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]]) -> None:
        self._method = method
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, client: None, owner: type[Client]) -> Self: ...
    @overload
    def __get__(self, client: Client, owner: type[Client]) -> Callable[P, R]: ...
    def __get__(self, client: Client | None, owner: type[Client]) -> Self | Callable[P, R]:
        if client is None:
            return self
        method, aio, loop = self._method, client._aio, client._loop

        @functools.wraps(method)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            return loop.run(method(aio, *args, **kwargs))

        return call


class _iterating(Generic[P, T]):
    """An AsyncClient stream as a Client method returning an iterator (one blocking wait per item)."""

    def __init__(self, method: Callable[Concatenate[AsyncClient, P], AsyncIterator[T]]) -> None:
        self._method = method
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, client: None, owner: type[Client]) -> Self: ...
    @overload
    def __get__(self, client: Client, owner: type[Client]) -> Callable[P, Generator[T, None, None]]: ...
    def __get__(self, client: Client | None, owner: type[Client]) -> Self | Callable[P, Generator[T, None, None]]:
        if client is None:
            return self
        method, aio, loop = self._method, client._aio, client._loop

        @functools.wraps(method)
        def call(*args: P.args, **kwargs: P.kwargs) -> Generator[T, None, None]:
            return _iterate(loop, method(aio, *args, **kwargs))

        return call


def _iterate(loop: _LoopThread, items: AsyncIterator[T]) -> Generator[T, None, None]:
    """close() on the result (or leaving a for loop over it early and dropping it) ends the stream's call."""

    async def step() -> tuple[bool, T | None]:
        try:
            return True, await anext(items)
        except StopAsyncIteration:
            return False, None

    try:
        while True:
            more, item = loop.run(step())
            if not more:
                return
            yield item  # type: ignore[misc]  # an item, since more is True
    finally:
        if isinstance(items, AsyncGenerator) and not loop.loop.is_closed():
            loop.run(items.aclose())  # the stream's call is cancelled, not left open


class Client:
    """The blocking SDK: the methods of AsyncClient, each waiting for its answer. Every method raises a
    TensorFleetError subclass with a clear message. Connects (and checks the token and certificate) at once."""

    def __init__(self, address: str | None = None, timeout: float = 30.0) -> None:
        self._aio = AsyncClient(address, timeout)
        self._loop = _LoopThread()
        self._closer = weakref.finalize(self, _close, self._loop, self._aio)
        try:
            self._loop.run(self._aio.connect())
        except BaseException:
            self.close()
            raise

    @property
    def address(self) -> str:
        return self._aio.address

    @property
    def timeout(self) -> float:
        return self._aio.timeout

    def close(self) -> None:
        self._closer()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    info = _blocking(AsyncClient.info)
    submit = _blocking(AsyncClient.submit)
    submit_many = _blocking(AsyncClient.submit_many)
    jobs = _blocking(AsyncClient.jobs)
    job = _blocking(AsyncClient.job)
    cancel = _blocking(AsyncClient.cancel)
    pause = _blocking(AsyncClient.pause)
    resume = _blocking(AsyncClient.resume)
    retry = _blocking(AsyncClient.retry)
    delete_job = _blocking(AsyncClient.delete_job)
    resubmit = _blocking(AsyncClient.resubmit)
    metrics = _blocking(AsyncClient.metrics)
    logs = _blocking(AsyncClient.logs)
    watch = _iterating(AsyncClient.watch)
    watch_jobs = _iterating(AsyncClient.watch_jobs)
    wait = _blocking(AsyncClient.wait)
    wait_all = _blocking(AsyncClient.wait_all)
    agents = _blocking(AsyncClient.agents)
    watch_agents = _iterating(AsyncClient.watch_agents)
    add_agent = _blocking(AsyncClient.add_agent)
    remove_agent = _blocking(AsyncClient.remove_agent)
    drain_agent = _blocking(AsyncClient.drain_agent)
    wake_agent = _blocking(AsyncClient.wake_agent)
    pair_agent = _blocking(AsyncClient.pair_agent)
    agent_envs = _blocking(AsyncClient.agent_envs)
    agent_cache = _blocking(AsyncClient.agent_cache)
    prune_agent_envs = _blocking(AsyncClient.prune_agent_envs)
    workloads = _blocking(AsyncClient.workloads)
    upload_dataset = _blocking(AsyncClient.upload_dataset)
    upload_project = _blocking(AsyncClient.upload_project)
    submit_project = _blocking(AsyncClient.submit_project)
    datasets = _blocking(AsyncClient.datasets)
    preview_dataset = _blocking(AsyncClient.preview_dataset)
    delete_dataset = _blocking(AsyncClient.delete_dataset)
    upload_dataset_version = _blocking(AsyncClient.upload_dataset_version)
    add_dataset_reference = _blocking(AsyncClient.add_dataset_reference)
    dataset = _blocking(AsyncClient.dataset)
    read_dataset_file = _blocking(AsyncClient.read_dataset_file)
    models = _blocking(AsyncClient.models)
    model = _blocking(AsyncClient.model)
    set_alias = _blocking(AsyncClient.set_alias)
    remove_alias = _blocking(AsyncClient.remove_alias)
    tag_model = _blocking(AsyncClient.tag_model)
    describe_model = _blocking(AsyncClient.describe_model)
    delete_model = _blocking(AsyncClient.delete_model)
    model_stats = _blocking(AsyncClient.model_stats)
    collect_garbage = _blocking(AsyncClient.collect_garbage)
    download_model = _blocking(AsyncClient.download_model)
    load_model = _blocking(AsyncClient.load_model)
    artifacts = _blocking(AsyncClient.artifacts)
    download_artifact = _blocking(AsyncClient.download_artifact)
    add_pool = _blocking(AsyncClient.add_pool)
    list_pools = _blocking(AsyncClient.list_pools)
    get_pool = _blocking(AsyncClient.get_pool)
    remove_pool = _blocking(AsyncClient.remove_pool)
    create_join_credential = _blocking(AsyncClient.create_join_credential)
    shutdown = _blocking(AsyncClient.shutdown)
    whoami = _blocking(AsyncClient.whoami)
    create_token = _blocking(AsyncClient.create_token)
    tokens = _blocking(AsyncClient.tokens)
    revoke_token = _blocking(AsyncClient.revoke_token)
    audit = _blocking(AsyncClient.audit)
    set_quota = _blocking(AsyncClient.set_quota)
    list_quotas = _blocking(AsyncClient.list_quotas)


def _close(loop: _LoopThread, aio: AsyncClient) -> None:
    """Close the channel and end the loop's thread (on close(), or when the Client is garbage)."""
    loop.stop(aio.close())
