"""The embedded broker: kombu's file transport, with messages that appear whole and are taken whole.

kombu's own file transport creates a message under its final name and writes it afterwards, and its
reader takes the writer's lock nowhere. A worker polling in that moment takes an empty file, cannot
decode it, and Celery stops as on an unrecoverable error: the message, one file's task, is gone (it
was already moved off the queue), and `run` itself exits when it was its ingest worker. Here a writer
writes under a name no reader looks at and renames the message into place; a reader leaves alone a
message that is empty or locked (a writer of kombu's own kind still at it), moves what it takes
within the broker folder, and sets aside, never crashes on, a message it cannot decode.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from queue import Empty
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)
TRANSPORT = "worker.filequeue:Transport"  # Celery's `broker_transport` for the embedded broker


def _message_name(queue: str) -> str:
    """kombu's own naming, so both kinds of writer share one order: milliseconds, a uuid, the queue."""
    return f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: dict, **kwargs: object) -> None:
        """Write to `.<name>.part` (invisible to readers), then rename: a reader sees all of it or nothing."""
        name = _message_name(queue)
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, os.path.join(self.data_folder_out, name))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise ChannelError(f"cannot add message {name} to {self.data_folder_out}") from exc

    def _get(self, queue: str) -> dict:
        """The oldest complete message of `queue`, moved into the processed folder; Empty when there is none."""
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            taken = self._take(name)
            if taken is None:
                continue
            path, payload = taken
            try:
                message = loads(bytes_to_str(payload))
            except ValueError:
                log.error("broker message %s for queue %s cannot be decoded; kept at %s", name, queue, path)
                continue
            if not self.store_processed:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            return message
        raise Empty()

    def _take(self, name: str) -> tuple[str, bytes] | None:
        """Where the message now lies and its bytes, once this reader owns it; None while a writer is still at
        it or when another reader took it first."""
        source = os.path.join(self.data_folder_in, name)
        try:
            handle = open(source, "rb")  # noqa: SIM115 - closed below, after the rename
        except FileNotFoundError:
            return None
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)  # a kombu writer holds LOCK_EX
            except BlockingIOError:
                return None
            if os.fstat(handle.fileno()).st_size == 0:  # created, not yet written
                return None
            taken = os.path.join(self.processed_folder, name)
            try:
                os.rename(source, taken)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise ChannelError(f"cannot take message {name} from {self.data_folder_in}") from exc
            return taken, handle.read()


class Transport(filesystem.Transport):
    Channel = Channel

    def drain_events(self, connection: object, timeout: float | None = None) -> None:
        """Return after one poll while every consuming channel is at its prefetch limit.

        Celery's loop for transports without an event loop acknowledges finished tasks only between calls
        here, and asks for 2 s at a time: a threaded worker whose threads were all busy could be handed
        nothing, so its finished tasks' acknowledgements, and with them its next messages, waited out the
        whole 2 s.
        """
        consuming = [channel for channel in self.channels if channel._consumers]
        if timeout and consuming and not any(channel.qos.can_consume() for channel in consuming):
            timeout = min(timeout, self.polling_interval)
        return super().drain_events(connection, timeout=timeout)
