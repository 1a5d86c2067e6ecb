"""The least an HTTP ingest service can do: ``python -m bench.minimal_server --port P DIR``.

A reference point for ``bench.ingest``, not part of the archive. Each ``PUT /r/{name}`` body is
read as ``archive serve`` reads it and put into the archive's own local store (fsync'd,
renamed), and nothing else happens: no token, no index, no audit event, no metadata, no WAV
check, no logging, no metrics. With ``--work sealed`` (the default) the body also goes through
SHA-256 and the archive's AES-256-GCM stream cipher on the way, which is exactly the byte work
of keeping an original; with ``--work none`` it is stored as received.

So ``bench.ingest`` can split the distance from a bare put to ``archive serve``: HTTP alone
(``none``), then the hash and the cipher (``sealed``), which the issue and the design require of
any implementation, then the archive's own bookkeeping, which is the only part that is ours to
make cheaper.
"""

import argparse
import asyncio
import hashlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from storage import crypto
from storage.local import LocalBlobStore

CHUNK = 64 * 1024  # as web.views.ingest reads the body


async def serve(port: int, folder: Path, *, sealed: bool) -> None:
    store = await LocalBlobStore(folder).open()
    key = os.urandom(crypto.KEY_SIZE)

    async def put(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        hasher = hashlib.sha256()

        async def hashed() -> AsyncIterator[bytes]:
            async for chunk in request.content.iter_chunked(CHUNK):
                hasher.update(chunk)
                yield chunk

        if sealed:
            await store.put(f"minimal/{name}", crypto.encrypt(key, name.encode(), hashed()))
            return web.json_response({"sha256": hasher.hexdigest()}, status=201)
        size = await store.put(f"minimal/{name}", request.content.iter_chunked(CHUNK))
        return web.json_response({"size": size}, status=201)

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=0)  # 0: no limit on the body size
    app.router.add_put("/r/{name}", put)
    app.router.add_get("/healthz", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    await stopped.wait()
    await runner.cleanup()
    await store.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.minimal_server", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--work", choices=("sealed", "none"), default="sealed",
                        help="sealed: SHA-256 and AES-256-GCM on the way (default); none: "
                             "store the body as received")
    parser.add_argument("folder", type=Path, help="where the local store keeps its files")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.folder, sealed=args.work == "sealed"))


if __name__ == "__main__":
    main(sys.argv[1:])
