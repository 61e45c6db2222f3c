"""The embedded broker hands a threaded worker its next message as soon as a slot frees.

Celery's loop for transports without an event loop acknowledges finished tasks only between calls to
`drain_events`, and asks for 2 s each time. With every slot taken nothing could be delivered, so the
acknowledgements, and with them the next messages, waited out the whole call: a classifier with all its
threads busy stalled for 2 s at a time.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from kombu import Connection

from worker.celery_app import broker_options
from worker.filequeue import TRANSPORT
from worker.settings import Settings


def _connection(home: Path) -> Connection:
    return Connection(transport=TRANSPORT, transport_options=broker_options(Settings(home=home)))


def test_a_full_prefetch_returns_after_one_poll_so_acknowledgements_go_out(tmp_path: Path) -> None:
    with _connection(tmp_path) as connection:
        producer = connection.SimpleQueue("infer")
        for n in range(3):
            producer.put({"n": n})
        taken: list = []
        channel = connection.channel()
        channel.basic_qos(prefetch_size=0, prefetch_count=1)
        consumer = connection.Consumer(producer.queue, channel=channel, callbacks=[lambda body, m: taken.append(m)])
        consumer.consume()
        connection.drain_events(timeout=5)
        assert len(taken) == 1  # messages of one millisecond come in any order, as kombu's own file transport's

        started = time.monotonic()  # the one slot is taken: nothing can come, and the call must say so at once
        with pytest.raises(socket.timeout):
            connection.drain_events(timeout=5)
        assert time.monotonic() - started < 1.0, "a worker with every slot busy waited out the whole call"

        taken[0].ack()  # the slot frees: the next message is delivered by the next call
        connection.drain_events(timeout=5)
        assert len(taken) == 2 and len({m.payload["n"] for m in taken}) == 2
        consumer.cancel()
        producer.close()


def test_a_free_slot_still_waits_for_a_message_the_whole_timeout(tmp_path: Path) -> None:
    """Only a full prefetch shortens the call: an idle worker keeps blocking for what it asked."""
    with _connection(tmp_path) as connection:
        queue = connection.SimpleQueue("infer")
        started = time.monotonic()
        with pytest.raises(queue.Empty):
            queue.get(block=True, timeout=0.6)
        assert time.monotonic() - started >= 0.55
        queue.close()
