"""ingest.streams.tee: every branch gets every byte in order, memory stays bounded, and no
branch (failed, closed, cancelled or dropped) can stall the others."""

import asyncio
import gc
import itertools
import random
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.streams import TeeBranch, TeeReaderCancelledError, tee

TIMEOUT = 5.0  # seconds: a deadlock fails the test instead of hanging the suite


async def from_chunks(chunks: list[bytes], reads: list[int] | None = None,
                      closed: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    """Yield ``chunks``, counting reads in ``reads`` and setting ``closed`` when finalised."""
    try:
        for chunk in chunks:
            if reads is not None:
                reads.append(len(chunk))
            yield chunk
            await asyncio.sleep(0)
    finally:
        if closed is not None:
            closed.set()


async def collect(branch: AsyncIterator[bytes], pause: float = 0.0) -> list[bytes]:
    out = []
    async for chunk in branch:
        out.append(chunk)
        await asyncio.sleep(pause)
    return out


class BoomError(Exception):
    pass


@settings(max_examples=100, deadline=None)
@given(
    data=st.binary(max_size=4000),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=30),
    n=st.integers(min_value=1, max_value=4),
    max_buffered=st.integers(min_value=1, max_value=4),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_every_branch_gets_exactly_the_source(data: bytes, cuts: list[int], n: int,
                                              max_buffered: int, seed: int) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    rng = random.Random(seed)
    delays = [[rng.choice((0, 0, 0.0005)) for _ in chunks] for _ in range(n)]

    async def consume(branch: AsyncIterator[bytes], pauses: list[float]) -> list[bytes]:
        out = []
        async for chunk in branch:
            out.append(chunk)
            await asyncio.sleep(pauses[len(out) - 1])
        return out

    async def run() -> list[list[bytes]]:
        branches = tee(from_chunks(chunks), n, max_buffered)
        return await asyncio.wait_for(
            asyncio.gather(*(consume(b, d) for b, d in zip(branches, delays, strict=True))),
            TIMEOUT)

    results = asyncio.run(run())
    for got in results:
        assert got == chunks
        assert b"".join(got) == data


async def test_reading_is_lazy_and_bounded_by_the_slowest_branch() -> None:
    reads: list[int] = []
    chunks = [bytes([i]) * 10 for i in range(50)]
    fast, slow = tee(from_chunks(chunks, reads), 2, max_buffered=3)
    await asyncio.sleep(0.01)
    assert reads == []  # nothing is read before a branch is iterated

    fast_task = asyncio.create_task(collect(fast))
    assert await anext(slow) == chunks[0]
    await asyncio.sleep(0.05)
    # The slow branch holds at most 3 chunks; one more may be in the reader's hand.
    assert len(reads) <= 1 + 3 + 1
    assert not fast_task.done()
    rest = await asyncio.wait_for(collect(slow), TIMEOUT)
    assert [chunks[0], *rest] == chunks
    assert await asyncio.wait_for(fast_task, TIMEOUT) == chunks


async def test_a_source_error_reaches_every_branch_after_its_chunks() -> None:
    error = BoomError("client went away")

    async def failing() -> AsyncIterator[bytes]:
        yield b"one"
        yield b"two"
        raise error

    branches = tee(failing(), 3)
    for branch in branches:
        assert await anext(branch) == b"one"
        assert await anext(branch) == b"two"
        with pytest.raises(BoomError) as caught:
            await anext(branch)
        assert caught.value is error


async def test_a_closed_branch_does_not_hold_the_others_back() -> None:
    chunks = [b"x" * 100] * 40
    first, second, third = tee(from_chunks(chunks), 3, max_buffered=2)
    assert await anext(first) == chunks[0]
    assert isinstance(first, TeeBranch) and isinstance(second, TeeBranch)
    await first.aclose()
    await second.aclose()  # closed before it ever read
    assert await asyncio.wait_for(collect(third), TIMEOUT) == chunks
    with pytest.raises(StopAsyncIteration):
        await anext(first)


async def test_a_cancelled_consumer_leaves_the_tee() -> None:
    chunks = [b"y" * 10] * 30
    stuck, other = tee(from_chunks(chunks), 2, max_buffered=1)

    async def read_one_then_hang() -> None:
        await anext(stuck)
        await anext(stuck)  # the tee is waiting for `other`: this waits too
        await asyncio.sleep(3600)

    task = asyncio.create_task(read_one_then_hang())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # `stuck` never read again, but `other` still gets everything.
    assert await asyncio.wait_for(collect(other), TIMEOUT) == chunks


async def test_a_branch_waiting_for_data_leaves_when_its_task_is_cancelled() -> None:
    gate = asyncio.Event()

    async def slow_source() -> AsyncIterator[bytes]:
        yield b"a"
        await gate.wait()
        for chunk in (b"b", b"c", b"d"):  # more than `waiting` could hold
            yield chunk

    waiting, other = tee(slow_source(), 2, max_buffered=1)
    assert await anext(waiting) == b"a"
    async def next_chunk() -> bytes:
        return await anext(waiting)

    task = asyncio.create_task(next_chunk())  # blocks: the source is slow
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    assert await asyncio.wait_for(collect(other), TIMEOUT) == [b"a", b"b", b"c", b"d"]


async def test_a_dropped_branch_does_not_hold_the_others_back() -> None:
    chunks = [b"z" * 10] * 30
    branches = tee(from_chunks(chunks), 2, max_buffered=1)
    keep = branches[1]
    del branches
    gc.collect()
    assert await asyncio.wait_for(collect(keep), TIMEOUT) == chunks


async def test_when_every_branch_leaves_the_source_is_closed() -> None:
    closed = asyncio.Event()
    reads: list[int] = []
    first, second = tee(from_chunks([b"c"] * 1000, reads, closed), 2, max_buffered=2)
    await anext(first)
    await anext(second)
    assert isinstance(first, TeeBranch) and isinstance(second, TeeBranch)
    await first.aclose()
    await second.aclose()
    await asyncio.wait_for(closed.wait(), TIMEOUT)
    assert len(reads) < 10


async def test_branches_raise_if_the_reader_is_cancelled_from_outside() -> None:
    gate = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"a"
        await gate.wait()
        yield b"never"

    (branch,) = tee(stalled(), 1)
    assert await anext(branch) == b"a"
    readers = [t for t in asyncio.all_tasks() if t.get_name() == "tee-reader"]
    assert len(readers) == 1
    readers[0].cancel()
    with pytest.raises(TeeReaderCancelledError):
        await asyncio.wait_for(anext(branch), TIMEOUT)


@pytest.mark.parametrize(("n", "max_buffered"), [(0, 8), (2, 0)])
def test_tee_arguments_are_checked(n: int, max_buffered: int) -> None:
    with pytest.raises(ValueError, match="at least"):
        tee(from_chunks([]), n, max_buffered)
