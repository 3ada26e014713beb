"""The burst reader and writer for sanic's websockets (handoff.web.websocket_io), against
websockets' own frame parser; the integration tests cover them on a running server."""

from __future__ import annotations

import asyncio

import pytest
from websockets.connection import CLOSED, OPEN, Connection, Side
from websockets.frames import Frame, Opcode

from handoff.web.websocket_io import QueuedMessages, send_texts, take_queued


class FakeProtocol:
    """Sanic's pause/resume of reading, counted."""

    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pause_frames(self) -> bool:
        self.paused += 1
        return True

    def resume_frames(self) -> bool:
        self.resumed += 1
        return True


def text(data: str, fin: bool = True, opcode: Opcode = Opcode.TEXT) -> Frame:
    return Frame(opcode, data.encode("utf-8"), fin=fin)


async def test_messages_queue_without_waiting_and_come_out_in_order() -> None:
    queued = QueuedMessages(FakeProtocol())
    for number in range(5):
        await queued.put(text(f"m{number}"))
    assert await queued.get() == "m0"
    assert queued.take() == ["m1", "m2", "m3", "m4"]
    assert queued.take() == []
    assert await queued.get(timeout=0) is None


async def test_fragmented_text_binary_and_control_frames() -> None:
    queued = QueuedMessages(FakeProtocol())
    snowman = "☃".encode()
    await queued.put(Frame(Opcode.TEXT, b"caf" + snowman[:1], fin=False))
    await queued.put(Frame(Opcode.PING, b"", fin=True))  # ignored, even inside a message
    await queued.put(Frame(Opcode.CONT, snowman[1:] + b"!", fin=True))
    await queued.put(Frame(Opcode.BINARY, b"\x00\x01", fin=True))
    assert queued.take() == ["caf☃!", b"\x00\x01"]


async def test_get_waits_for_a_message_and_times_out() -> None:
    queued = QueuedMessages(FakeProtocol())
    assert await queued.get(timeout=0.01) is None
    waiting = queued.get()
    await asyncio.sleep(0)
    await queued.put(text("late"))
    assert await waiting == "late"


async def test_a_read_given_up_leaves_the_message_for_the_next_and_no_task_behind() -> None:
    """As sanic's recv waits: the message future beside its own cancellation future. A
    future, not a task, is left when the socket closes (no "Task was destroyed" at shutdown)."""
    queued = QueuedMessages(FakeProtocol())
    tasks_before = len(asyncio.all_tasks())
    cancel: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    read = queued.get()
    assert isinstance(read, asyncio.Future)
    cancel.cancel()  # the socket closed
    done, pending = await asyncio.wait((cancel, read), return_when=asyncio.FIRST_COMPLETED)
    assert done == {cancel}
    assert len(asyncio.all_tasks()) == tasks_before
    for waiting in pending:
        waiting.cancel()
    await queued.put(text("after"))
    assert await queued.get() == "after"


async def test_reading_pauses_at_the_limit_and_resumes_when_taken() -> None:
    protocol = FakeProtocol()
    queued = QueuedMessages(protocol, limit=3)
    for number in range(4):
        await queued.put(text(f"m{number}"))
    assert protocol.paused == 1  # once, at the third message
    assert await queued.get() == "m0"
    assert protocol.resumed == 0  # still at the limit
    assert await queued.get() == "m1"
    assert protocol.resumed == 1
    assert queued.take() == ["m2", "m3"]
    assert protocol.resumed == 1


class FakeWebsocket:
    """What send_texts uses of sanic's WebsocketImplProtocol: the sans-I/O connection, the
    send lock and the transport's protocol."""

    def __init__(self) -> None:
        self.connection = Connection(Side.SERVER, state=OPEN)
        self.conn_mutex = asyncio.Lock()
        self.written: list[bytes] = []
        self.io_proto = self

    async def send(self, data: bytes) -> None:
        self.written.append(data)


def parsed(data: bytes) -> list[tuple[Opcode, str]]:
    client = Connection(Side.CLIENT, state=OPEN)
    client.receive_data(data)
    return [
        (event.opcode, event.data.decode())
        for event in client.events_received()
        if isinstance(event, Frame)
    ]


async def test_send_texts_frames_a_burst_of_encoded_texts_in_one_write() -> None:
    ws = FakeWebsocket()
    await send_texts(ws, [b"a", "ß".encode(), b'{"type":"ack"}'])
    assert len(ws.written) == 1
    assert parsed(ws.written[0]) == [
        (Opcode.TEXT, "a"),
        (Opcode.TEXT, "ß"),
        (Opcode.TEXT, '{"type":"ack"}'),
    ]
    await send_texts(ws, [b"one"])  # bytes, and still a text message
    assert parsed(ws.written[1]) == [(Opcode.TEXT, "one")]
    await send_texts(ws, [])
    assert len(ws.written) == 2


async def test_send_texts_refuses_a_closed_connection() -> None:
    ws = FakeWebsocket()
    ws.connection.state = CLOSED
    with pytest.raises(Exception, match="closed"):
        await send_texts(ws, [b"a", b"b"])
    assert ws.written == []


def test_take_queued_is_empty_for_sanic_s_own_assembler() -> None:
    class Plain:
        assembler = object()

    assert take_queued(Plain()) == []
