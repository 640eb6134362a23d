#!/usr/bin/env python3
"""A TCP proxy that adds a fixed one-way latency to every chunk, in both directions.

This kernel has no netem qdisc, so Tests/netns/run.sh delays a gateway's uplink with this
proxy, run inside the gateway's network namespace:

    delay_proxy.py --delay-ms 30 127.0.0.1:5556=10.77.1.1:5556 127.0.0.1:5557=10.77.1.1:5557 ...

Each LISTEN=TARGET pair accepts on LISTEN and opens one upstream connection to TARGET per
accepted connection. Every chunk read from either side is held for --delay-ms and then written
to the other side, in order: data is pipelined (a chunk is not held back behind the previous
one's delay), so the latency is added without throttling the throughput. When either side
closes or fails, both are closed, so the peer's ZeroMQ socket notices and reconnects; an
upstream connect that does not complete within --connect-timeout-s (a partitioned link drops
the SYN) closes the accepted connection as well. Byte-transparent: ZMTP heartbeats pass
through, so a stalled upstream shows up as a heartbeat timeout at the ZeroMQ peer.

Prints "ready" on stdout once every listener is bound; SIGTERM or SIGINT stops it.
"""
import argparse
import asyncio
import signal
import sys


def parse_addr(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


async def relay(reader, writer, delay, loop):
    """Copy reader -> writer, delivering each chunk `delay` seconds after it was read."""
    queue = asyncio.Queue()

    async def intake():
        while True:
            data = await reader.read(65536)
            await queue.put((loop.time() + delay, data))
            if not data:
                return

    async def deliver():
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                return
            writer.write(data)
            await writer.drain()

    tasks = [asyncio.ensure_future(intake()), asyncio.ensure_future(deliver())]
    try:
        # Ends once the EOF was delivered, or at once when either side fails.
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            t.result()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def close(writer):
    try:
        writer.close()
    except Exception:
        pass


def handler(target, delay, connect_timeout, stats):
    async def handle(down_reader, down_writer):
        loop = asyncio.get_running_loop()
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*target), timeout=connect_timeout)
        except (OSError, asyncio.TimeoutError):
            stats["failed_connects"] += 1
            close(down_writer)
            return
        stats["connections"] += 1
        pumps = [asyncio.ensure_future(relay(down_reader, up_writer, delay, loop)),
                 asyncio.ensure_future(relay(up_reader, down_writer, delay, loop))]
        try:
            # One direction ending (EOF or error) ends the connection: ZeroMQ never half-closes.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            close(up_writer)
            close(down_writer)
    return handle


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay-ms", type=float, required=True, help="one-way latency added per chunk")
    ap.add_argument("--connect-timeout-s", type=float, default=3.0)
    ap.add_argument("pairs", nargs="+", metavar="LISTEN=TARGET", help="host:port=host:port")
    args = ap.parse_args()

    stats = {"connections": 0, "failed_connects": 0}
    servers = []
    for pair in args.pairs:
        listen, _, target = pair.partition("=")
        host, port = parse_addr(listen)
        servers.append(await asyncio.start_server(
            handler(parse_addr(target), args.delay_ms / 1000.0, args.connect_timeout_s, stats),
            host, port, reuse_address=True))
    print("ready", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()
    print(f"upstream connections {stats['connections']}, failed connects {stats['failed_connects']}",
          file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
