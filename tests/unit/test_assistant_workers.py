"""The assistant worker processes without Rasa: the wire format, the worker's request server
in-process, and real worker processes (tests/unit/fake_worker.py: the real WorkerServer with a
scripted assistant) behind WorkerProcess and AssistantWorkers: pinning, restarts, retries,
swaps and shutdown. Assertions are on answers, process ids and exit statuses.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handoff.assistant.interface import BotTurn
from handoff.assistant.tracker_changes import AgentSaid, BotPaused, BotResumed, TrackerChange
from handoff.assistant.worker_client import (
    AssistantWorkerError,
    WorkerGoneError,
    WorkerProcess,
    WorkerSpec,
    WorkerStartError,
)
from handoff.assistant.worker_process import EXIT_LOAD_FAILED, WorkerServer
from handoff.assistant.worker_protocol import (
    MAX_FRAME_BYTES,
    FrameError,
    decode_changes,
    encode_changes,
    encode_frame,
    read_frame,
)
from handoff.assistant.workers import AssistantWorkers, worker_index
from tests.unit.fake_assistant import BotAnswered, FakeAssistant, UserLogged
from tests.unit.fake_worker import EXIT_CRASHED, START_HOLD, STATE_ENV, read_journal

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SPEC = WorkerSpec(tracker_database_url="sqlite://", module="tests.unit.fake_worker")
HELLO_ANSWER = "Hello! How can I help?"
WAIT_SECONDS = 10.0
"""Upper bound on any single wait here; a passing test takes a small fraction of it."""


def stream(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    """A reader that holds ``data`` (then end of stream, with ``eof``)."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


# The wire format -----------------------------------------------------------------------------

keys = st.text(max_size=10)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(keys, json_values, max_size=4)
tracker_changes = st.lists(
    st.just(BotPaused())
    | st.just(BotResumed())
    | st.builds(AgentSaid, st.text(max_size=20), st.dictionaries(keys, json_values, max_size=3)),
    max_size=4,
)


@given(st.lists(json_objects, min_size=1, max_size=2))
async def test_frames_round_trip(messages: list[dict[str, Any]]) -> None:
    frames = [encode_frame(message) for message in messages]
    for frame in frames:
        (length,) = struct.unpack(">I", frame[:4])
        assert length == len(frame) - 4
    reader = stream(b"".join(frames))
    assert [await read_frame(reader) for _ in messages] == messages
    assert await read_frame(reader) is None


@given(tracker_changes)
def test_tracker_changes_round_trip_through_json(changes: list[TrackerChange]) -> None:
    wire = json.loads(json.dumps(encode_changes(changes)))
    assert decode_changes(wire) == changes


def test_unknown_tracker_changes_are_refused() -> None:
    with pytest.raises(FrameError, match="'typed'"):
        decode_changes([{"kind": "typed"}])
    with pytest.raises(TypeError):
        encode_changes(["paused"])  # type: ignore[list-item]


def body_of(length: int) -> dict[str, str]:
    """A message whose frame body is exactly ``length`` bytes."""
    return {"t": "x" * (length - len('{"t":""}'))}


async def test_frame_size_limit_on_encode_and_on_read() -> None:
    largest = encode_frame(body_of(MAX_FRAME_BYTES))
    assert len(largest) == 4 + MAX_FRAME_BYTES
    with pytest.raises(FrameError, match="over the"):
        encode_frame(body_of(MAX_FRAME_BYTES + 1))
    # Refused from the announced length alone, before any of the body arrives.
    with pytest.raises(FrameError, match="announced"):
        await asyncio.wait_for(
            read_frame(stream(struct.pack(">I", MAX_FRAME_BYTES + 1), eof=False)), WAIT_SECONDS
        )


@pytest.mark.parametrize(
    "body",
    [b"[1, 2]", b'"text"', b"7", b"null", b"{", b"", b"\xff\xfe{}", b'{"a": "\xed\xa0\x80"}'],
)
async def test_a_body_that_is_not_a_utf8_json_object_is_a_frame_error(body: bytes) -> None:
    with pytest.raises(FrameError):
        await read_frame(stream(struct.pack(">I", len(body)) + body))


async def test_end_of_stream_between_frames_and_inside_one() -> None:
    assert await read_frame(stream(b"")) is None
    frame = encode_frame({"id": 1, "op": "parse", "args": {"text": "hi"}})
    for cut in (1, 3, 4, len(frame) - 1):
        with pytest.raises(asyncio.IncompleteReadError):
            await read_frame(stream(frame[:cut]))


# The worker's request server, in-process ---------------------------------------------------


class GatedAssistant(FakeAssistant):
    """The scripted fake; parsing ``"gate"`` waits for :attr:`release`, ``"boom"`` raises."""

    def __init__(self) -> None:
        super().__init__(
            {"hello": [("greet", 0.97)], "what is my balance": [("check_balance", 0.95)]},
            {"greet": [{"text": HELLO_ANSWER}]},
        )
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def parse(self, text: str) -> dict[str, Any]:
        if text == "gate":
            self.started.set()
            await self.release.wait()
        if text == "boom":
            raise RuntimeError("boom")
        return await super().parse(text)


@dataclass
class Connection:
    """The server process's end of a socket pair whose other end a WorkerServer serves."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    serving: asyncio.Task[None]
    ids: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))

    def send(self, *frames: dict[str, Any]) -> None:
        """Write ``frames`` in one write (the server reads them together)."""
        self.writer.write(b"".join(encode_frame(frame) for frame in frames))

    async def answer(self) -> dict[str, Any]:
        frame = await asyncio.wait_for(read_frame(self.reader), WAIT_SECONDS)
        assert frame is not None, "the server closed the connection"
        return frame

    async def request(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one request and return its answer frame."""
        request_id = next(self.ids)
        self.send({"id": request_id, "op": op, "args": args})
        answer = await self.answer()
        assert answer["id"] == request_id
        return answer

    async def result(self, op: str, **args: Any) -> Any:
        answer = await self.request(op, **args)
        assert "result" in answer, answer
        return answer["result"]


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[FakeAssistant], Awaitable[Connection]]]:
    """Serve an assistant with a WorkerServer over a socket pair; closed after the test."""
    opened: list[tuple[Connection, asyncio.StreamWriter]] = []

    async def make(assistant: FakeAssistant) -> Connection:
        ours, theirs = socket.socketpair()
        server_reader, server_writer = await asyncio.open_unix_connection(sock=theirs)
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        serving = asyncio.create_task(WorkerServer(assistant, server_writer).serve(server_reader))
        connection = Connection(reader, writer, serving)
        opened.append((connection, server_writer))
        return connection

    yield make
    for connection, server_writer in opened:
        connection.writer.close()
        await asyncio.wait_for(connection.serving, WAIT_SECONDS)
        server_writer.close()
        await connection.writer.wait_closed()
        await server_writer.wait_closed()


async def test_server_answers_every_request(connect: Callable[..., Awaitable[Connection]]) -> None:
    fake = GatedAssistant()
    conn = await connect(fake)
    parsed = await conn.result("parse", text="hello")
    assert parsed["intent"] == {"name": "greet", "confidence": 0.97}
    turn = await conn.result(
        "respond", conversation_id="c1", text="hello", input_channel="web", message_id="m1"
    )
    assert BotTurn.from_dict(turn) == BotTurn(messages=[{"text": HELLO_ANSWER}])
    logged = await conn.result(
        "log_without_answer",
        conversation_id="c1",
        text="what is my balance",
        input_channel="web",
        then=encode_changes([BotPaused()]),
    )
    assert logged["intent"]["name"] == "check_balance"
    assert await conn.result("is_paused", conversation_id="c1") is True
    changes = encode_changes([AgentSaid("On it.", {"agent": "alice"}), BotResumed()])
    assert await conn.result("append_to_tracker", conversation_id="c1", changes=changes) == []
    assert await conn.result("is_paused", conversation_id="c1") is False
    assert fake.changes("c1") == [
        UserLogged("hello", "m1", "greet", True, {}),
        BotAnswered(HELLO_ANSWER),
        UserLogged("what is my balance", None, "check_balance", False, {}),
        BotPaused(),
        AgentSaid("On it.", {"agent": "alice"}),
        BotResumed(),
    ]


async def test_errors_are_answers_and_the_server_keeps_serving(
    connect: Callable[..., Awaitable[Connection]],
) -> None:
    conn = await connect(GatedAssistant())
    raised = await conn.request("parse", text="boom")
    assert raised["error"] == {"type": "RuntimeError", "message": "boom"}
    missing = await conn.request("parse")
    assert missing["error"]["type"] == "KeyError"
    unknown = await conn.request("train", model="m.tar.gz")
    assert unknown["error"]["type"] == "FrameError"
    assert "'train'" in unknown["error"]["message"]
    bad_change = await conn.request("append_to_tracker", conversation_id="c", changes=[{}])
    assert bad_change["error"]["type"] == "FrameError"
    assert (await conn.result("parse", text="hello"))["intent"]["name"] == "greet"


async def test_shutdown_answers_after_the_requests_in_flight(
    connect: Callable[..., Awaitable[Connection]],
) -> None:
    fake = GatedAssistant()
    conn = await connect(fake)
    conn.send(
        {"id": 1, "op": "parse", "args": {"text": "gate"}},
        {"id": 2, "op": "shutdown"},
        {"id": 3, "op": "parse", "args": {"text": "hello"}},  # after shutdown: never read
    )
    await asyncio.wait_for(fake.started.wait(), WAIT_SECONDS)
    assert not conn.serving.done()
    fake.release.set()
    first, second = await conn.answer(), await conn.answer()
    assert first["id"] == 1 and first["result"]["text"] == "gate"
    assert second == {"id": 2, "result": None}
    await asyncio.wait_for(conn.serving, WAIT_SECONDS)
    assert fake.parsed == ["gate"]


async def test_end_of_stream_ends_serve_after_what_is_in_flight(
    connect: Callable[..., Awaitable[Connection]],
) -> None:
    fake = GatedAssistant()
    conn = await connect(fake)
    conn.send({"id": 1, "op": "parse", "args": {"text": "gate"}})
    conn.writer.write_eof()
    await asyncio.wait_for(fake.started.wait(), WAIT_SECONDS)
    assert not conn.serving.done()
    fake.release.set()
    assert (await conn.answer())["id"] == 1
    await asyncio.wait_for(conn.serving, WAIT_SECONDS)


async def test_a_broken_frame_ends_serve(connect: Callable[..., Awaitable[Connection]]) -> None:
    conn = await connect(GatedAssistant())
    conn.writer.write(struct.pack(">I", 6) + b"[1, 2]")
    await asyncio.wait_for(conn.serving, WAIT_SECONDS)


# Worker processes (the fake worker) ----------------------------------------------------------


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake workers' state directory; workers started in the test find ``tests``."""
    directory = tmp_path / "worker-state"
    directory.mkdir()
    monkeypatch.setenv(STATE_ENV, str(directory))
    paths = [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    return directory


@pytest.fixture
def model_file(tmp_path: Path) -> Callable[[str], Path]:
    """An (empty) model archive of that name; the fake worker serves it under that name."""

    def make(name: str) -> Path:
        path = tmp_path / "models" / name
        path.parent.mkdir(exist_ok=True)
        path.touch()
        return path

    return make


@pytest.fixture
async def start_worker(state: Path) -> AsyncIterator[Callable[..., Awaitable[WorkerProcess]]]:
    """Start fake workers; any still running after the test is killed."""
    started: list[WorkerProcess] = []

    async def start(model: Path, spec: WorkerSpec = SPEC) -> WorkerProcess:
        worker = await WorkerProcess.start(spec, "assistant-test", model)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()
        await worker.process.wait()
        await asyncio.wait_for(worker.gone.wait(), WAIT_SECONDS)


def pid_of(answer: dict[str, Any] | BotTurn) -> int:
    """The process that produced a parse result or a bot's turn."""
    if isinstance(answer, BotTurn):
        (pid,) = {reply["worker_pid"] for reply in answer.messages}
        return int(pid)
    return int(answer["worker_pid"])


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def until_exited(pid: int) -> None:
    """Wait until process ``pid`` has exited and been reaped (no event says so for a worker the
    pool retired, so this polls)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while running(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs"
        await asyncio.sleep(0.01)


async def test_worker_says_what_it_serves(
    start_worker: Callable[..., Awaitable[WorkerProcess]], model_file: Callable[[str], Path]
) -> None:
    model = model_file("m1.tar.gz")
    spec = WorkerSpec(
        tracker_database_url="sqlite://", fallback_threshold=0.3, module="tests.unit.fake_worker"
    )
    worker = await start_worker(model, spec)
    assert (worker.info.name, worker.info.path, worker.info.fallback_threshold) == (
        "m1.tar.gz",
        model,
        0.3,
    )
    assert worker.intent_names() == ["check_balance", "greet"]
    assert worker.responses()["utter_greet"] == [HELLO_ANSWER]
    assert pid_of(await worker.parse("pid")) == worker.pid


async def test_worker_answers_calls(
    start_worker: Callable[..., Awaitable[WorkerProcess]],
    model_file: Callable[[str], Path],
    state: Path,
) -> None:
    worker = await start_worker(model_file("m1.tar.gz"))
    assert (await worker.parse("what is my balance"))["intent"]["name"] == "check_balance"
    turn = await worker.respond("c1", "hello", input_channel="web", message_id="m1")
    assert [reply["text"] for reply in turn.messages] == [HELLO_ANSWER]
    logged = await worker.log_without_answer("c1", "blorp", input_channel="web", then=[BotPaused()])
    assert logged["intent"]["name"] == "nlu_fallback"
    assert await worker.is_paused("c1") is True
    await worker.append_to_tracker("c1", [AgentSaid("On it.", {"agent": "alice"}), BotResumed()])
    assert await worker.is_paused("c1") is False
    with pytest.raises(AssistantWorkerError, match="ValueError: scripted error"):
        await worker.parse("error")
    assert pid_of(await worker.parse("pid")) == worker.pid  # still up
    records = [(r["record"], r.get("text")) for r in read_journal(state)]
    assert records == [
        ("UserLogged", "hello"),
        ("BotAnswered", HELLO_ANSWER),
        ("UserLogged", "blorp"),
        ("BotPaused", None),
        ("AgentSaid", "On it."),
        ("BotResumed", None),
    ]


async def test_a_model_that_fails_to_load_is_a_start_error(
    start_worker: Callable[..., Awaitable[WorkerProcess]], model_file: Callable[[str], Path]
) -> None:
    with pytest.raises(WorkerStartError) as raised:
        await start_worker(model_file("fail-m1.tar.gz"))
    message = str(raised.value)
    assert "scripted load failure of fail-m1.tar.gz" in message
    assert f"(exit {EXIT_LOAD_FAILED})" in message


async def test_a_crash_mid_call_is_worker_gone(
    start_worker: Callable[..., Awaitable[WorkerProcess]], model_file: Callable[[str], Path]
) -> None:
    worker = await start_worker(model_file("m1.tar.gz"))
    with pytest.raises(WorkerGoneError):
        await worker.parse("die")
    assert worker.gone.is_set()
    assert await worker.process.wait() == EXIT_CRASHED
    with pytest.raises(WorkerGoneError):
        await worker.parse("hello")


async def test_shutdown_finishes_what_is_in_flight_and_exits_0(
    start_worker: Callable[..., Awaitable[WorkerProcess]], model_file: Callable[[str], Path]
) -> None:
    worker = await start_worker(model_file("m1.tar.gz"))
    slow = asyncio.create_task(worker.parse("slow"))
    assert await worker.shutdown(timeout=WAIT_SECONDS) == 0
    assert pid_of(await slow) == worker.pid
    assert worker.gone.is_set()


# The pool of workers -------------------------------------------------------------------------

CONVERSATIONS = [f"conversation-{n}" for n in range(12)]


def pinned_to(index: int) -> list[str]:
    conversations = [c for c in CONVERSATIONS if worker_index(c, 2) == index]
    assert conversations, f"no conversation of {CONVERSATIONS} is pinned to worker {index}"
    return conversations


@pytest.fixture
async def pool(state: Path, model_file: Callable[[str], Path]) -> AsyncIterator[AssistantWorkers]:
    """Two fake workers serving ``m1.tar.gz``; closed after the test."""
    workers = AssistantWorkers(SPEC, 2)
    await workers.start(model_file("m1.tar.gz"))
    yield workers
    await workers.close()


async def answering_pid(workers: AssistantWorkers, conversation_id: str) -> int:
    """The worker process that answers a bot turn of ``conversation_id`` now."""
    replies = workers.respond(conversation_id, "hello", input_channel="web")
    return pid_of(await asyncio.wait_for(replies, WAIT_SECONDS))


async def test_each_conversation_stays_on_its_worker(pool: AssistantWorkers) -> None:
    pids = pool.pids()
    assert len(set(pids)) == 2 and None not in pids
    for conversation_id in CONVERSATIONS:
        expected = pids[worker_index(conversation_id, 2)]
        for _ in range(2):
            assert await answering_pid(pool, conversation_id) == expected
    parse_pids = {pid_of(await pool.parse("pid")) for _ in range(4)}
    assert parse_pids == set(pids)  # parses (no conversation) go to every worker
    assert pool.info.name == "m1.tar.gz"
    assert pool.intent_names() == ["check_balance", "greet"]


async def until_serving(workers: AssistantWorkers, replaced: set[int]) -> list[int]:
    """The pool's pids once every slot has a live worker none of ``replaced`` (no event says
    that a restart is done, so this polls)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        pids = workers.pids()
        if not (set(pids) & (replaced | {None})):
            return [pid for pid in pids if pid is not None]
        assert time.monotonic() < deadline, f"workers {pids} still restarting"
        await asyncio.sleep(0.01)


async def test_a_killed_worker_is_restarted_its_sibling_serving_meanwhile(
    pool: AssistantWorkers, state: Path
) -> None:
    killed, kept = pool.pids()
    assert killed is not None and kept is not None
    (state / START_HOLD).touch()  # the replacement waits before it says ready
    os.kill(killed, 9)
    for conversation_id in pinned_to(0):
        assert await answering_pid(pool, conversation_id) == kept
    assert pool.pids() == [None, kept]
    (state / START_HOLD).unlink()
    replacement, still_kept = await until_serving(pool, {killed})
    assert still_kept == kept and replacement != kept
    for conversation_id in pinned_to(0):
        assert await answering_pid(pool, conversation_id) == replacement
    for conversation_id in pinned_to(1):
        assert await answering_pid(pool, conversation_id) == kept
    assert pool.restarts == 1
    assert not running(killed)


async def test_a_call_in_flight_when_its_worker_dies_is_sent_again(
    pool: AssistantWorkers, state: Path
) -> None:
    conversation_id = pinned_to(1)[0]
    live, dying = pool.pids()
    assert live is not None and dying is not None
    logged = await pool.log_without_answer(
        conversation_id, "die-once", input_channel="web", then=[BotPaused()]
    )
    assert pid_of(logged) == live  # the replacement is not ready yet: its sibling took it
    records = [(r["pid"], r["conversation_id"], r["record"]) for r in read_journal(state)]
    assert records == [(live, conversation_id, "UserLogged"), (live, conversation_id, "BotPaused")]
    assert (await until_serving(pool, {dying}))[0] == live
    assert pool.restarts == 1


async def test_a_call_whose_second_try_dies_too_is_worker_gone(pool: AssistantWorkers) -> None:
    conversation_id = pinned_to(0)[0]
    first, second = pool.pids()
    assert first is not None and second is not None
    with pytest.raises(WorkerGoneError):  # it killed its worker, then the one it went to next
        await pool.respond(conversation_id, "die", input_channel="web")
    replacements = await until_serving(pool, {first, second})
    assert pool.restarts == 2
    assert await answering_pid(pool, conversation_id) == replacements[0]


async def test_swap_serves_the_new_model_and_retires_the_old_workers(
    pool: AssistantWorkers, model_file: Callable[[str], Path]
) -> None:
    old = pool.pids()
    in_flight = asyncio.create_task(pool.respond(pinned_to(0)[0], "slow", input_channel="web"))
    await pool.swap(model_file("m2.tar.gz"))
    new = pool.pids()
    assert None not in new and not set(new) & set(old)
    assert pool.info.name == "m2.tar.gz"
    for conversation_id in CONVERSATIONS:
        assert await answering_pid(pool, conversation_id) == new[worker_index(conversation_id, 2)]
    assert pid_of(await in_flight) == old[0]  # the retiring worker finished it
    for pid in old:
        assert pid is not None
        await until_exited(pid)
    assert pool.restarts == 0


async def test_a_failed_swap_keeps_the_old_workers(
    pool: AssistantWorkers, model_file: Callable[[str], Path]
) -> None:
    old = pool.pids()
    with pytest.raises(WorkerStartError, match="scripted load failure"):
        await pool.swap(model_file("fail-m2.tar.gz"))
    assert pool.pids() == old and pool.info.name == "m1.tar.gz"
    for conversation_id in CONVERSATIONS:
        assert await answering_pid(pool, conversation_id) == old[worker_index(conversation_id, 2)]


async def test_close_stops_every_worker(pool: AssistantWorkers) -> None:
    pids = pool.pids()
    await pool.close()
    for pid in pids:
        assert pid is not None and not running(pid)
