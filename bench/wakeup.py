"""What a process pays to be woken for one message, at a low rate and at a high one.

    python -m bench.wakeup                 # 60/s and 3000/s, 6 small writes per message
    python -m bench.wakeup --rates 60,600,3000 --writes 6

A receiver process (an asyncio loop, as our servers are) sleeps until a message arrives on a socket,
writes it to ``--writes`` other sockets (a small hand-out) and sleeps again; a sender process sends
the messages at a fixed rate. The receiver's CPU time per message (``getrusage``) is printed for each
rate. At a low rate every message wakes a process that was asleep, with cold caches (and, on a
virtual machine, a halted virtual CPU); at a high rate messages find it awake. The difference is the
price of a wakeup, which a message crossing processes pays once per process it wakes (the sender's
own, Redis, each receiving server): the reason two server processes cost more per delivery than one
(docs/performance.md, "What limits us").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import time

MESSAGE = b"x" * 200


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _receive(sock: socket.socket, count: int, sinks: list[socket.socket]) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    received = 0

    class Receiver(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            nonlocal received
            for sink in sinks:
                sink.send(data)
            received += len(data) // len(MESSAGE)
            if received >= count and not done.done():
                done.set_result(None)

    await loop.connect_accepted_socket(Receiver, sock)
    await done


def measure(rate: float, count: int, writes: int) -> float:
    """The receiver's CPU microseconds per message at ``rate`` messages a second."""
    sender, receiver = socket.socketpair()
    pairs = [socket.socketpair() for _ in range(writes)]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the receiver
        sender.close()
        for sink, _ in pairs:
            sink.setblocking(False)
        before = _cpu()
        asyncio.run(_receive(receiver, count, [sink for sink, _ in pairs]))
        os.write(write_end, repr((_cpu() - before) / count * 1e6).encode())
        os._exit(0)
    receiver.close()
    drains = [drain for _, drain in pairs]
    due = time.monotonic()
    for _ in range(count):
        due += 1 / rate
        while (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        sender.send(MESSAGE)
        for drain in drains:  # keep the receiver's writes from filling a buffer
            try:
                drain.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
    os.waitpid(pid, 0)
    return float(os.read(read_end, 64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="60,3000", help="messages per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=10, help="how long each rate runs")
    parser.add_argument("--writes", type=int, default=6, help="socket writes per message")
    args = parser.parse_args()
    for rate in (float(r) for r in args.rates.split(",")):
        count = max(100, int(rate * args.seconds))
        print(f"{rate:7.0f} messages/s: {measure(rate, count, args.writes):6.1f} us of CPU per message", flush=True)


if __name__ == "__main__":
    main()
