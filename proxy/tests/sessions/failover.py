"""A stand-in for a Kubernetes Service in front of two Portcullis replicas:
a TCP forwarder that sends each new connection to the first replica that
accepts it. When a replica is killed, its connections close and the
client's next ones reach the other replica, as kube-proxy would route them
once the endpoint is gone.

Usage: failover.py <listen-port> <replica-port> [<replica-port>...]
"""

import asyncio
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer, ports):
    for port in ports:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            continue
    else:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, up_writer), pipe(up_reader, client_writer))


async def main():
    listen, ports = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]
    server = await asyncio.start_server(lambda r, w: handle(r, w, ports), "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
