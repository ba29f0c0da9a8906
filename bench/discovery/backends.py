"""The discovery bench's backends: one process, one tiny aiohttp app on each given address
(127.0.0.2, 127.0.0.3, ...), all on one port, as containers behind one DNS name are; each
answers `X-Backend: <its address>` after `--delay` seconds.

usage: python bench/discovery/backends.py --port P --delay 0.005 127.0.0.2 127.0.0.3 ...
"""

import argparse
import asyncio

from aiohttp import web


async def serve(hosts: list[str], port: int, delay: float) -> None:
    for host in hosts:
        async def handle(request: web.Request, host: str = host) -> web.Response:
            await asyncio.sleep(delay)
            return web.Response(text="ok\n", headers={"X-Backend": host})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.005)
    parser.add_argument("hosts", nargs="+")
    args = parser.parse_args()
    asyncio.run(serve(args.hosts, args.port, args.delay))


if __name__ == "__main__":
    main()
