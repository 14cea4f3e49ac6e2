"""Entry point inside a sandboxed external eval's container (standard library only: it runs under the
image's python3, mounted read-only, and imports nothing of evalbench).

The container has no network (`network_mode=none`: loopback only). This script listens on
127.0.0.1:<port> inside the container and relays each connection to the model gateway's unix socket,
mounted from the host, so the benchmark reaches `http://127.0.0.1:<port>/v1` and nothing else
(docs/architecture.md, "External evals"). Then it runs the benchmark's command and exits with its code.

    python3 container_entry.py --socket /gateway/gateway.sock --port 8765 -- inspect eval ...
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import threading


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(1 << 16):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()  # half-close: the other direction may still carry the response
    except (ConnectionError, OSError):
        pass


def _serve(socket_path: str, port: int, ready: threading.Event, failed: list[BaseException]) -> None:
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(socket_path)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        writer.close()
        up_writer.close()

    async def main() -> None:
        server = await asyncio.start_server(relay, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(main())
    except BaseException as err:  # noqa: BLE001 - reported by the main thread
        failed.append(err)
        ready.set()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    ready = threading.Event()
    failed: list[BaseException] = []
    threading.Thread(target=_serve, args=(args.socket, args.port, ready, failed), daemon=True).start()
    ready.wait(30)
    if failed or not ready.is_set():
        print(f"evalbench container entry: cannot listen on 127.0.0.1:{args.port}: {failed}", file=sys.stderr)
        return 70
    try:
        return subprocess.call(command)
    except OSError as err:  # the benchmark's command is not in the image
        print(f"evalbench container entry: cannot run {command[:1]}: {err}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
