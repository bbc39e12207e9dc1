"""Interop client for TestAiocoapClient: sends the gateway the requests of the device contract
with aiocoap's client and prints one JSON object per answer (name, code, type, payload, options).

Usage: python3 aiocoap_client.py HOST:PORT
"""
import asyncio
import json
import sys

from aiocoap import DELETE, GET, POST, PUT, Context, Message, Reliable, Unreliable


async def main(hostport):
    ctx = await Context.create_client_context()
    out = []

    async def req(name, code, path, payload=b"", cf=None, tuning=Reliable):
        def message():
            m = Message(code=code, uri=f"coap://{hostport}{path}", payload=payload, transport_tuning=tuning)
            if cf is not None:
                m.opt.content_format = cf
            return m

        r = await asyncio.wait_for(ctx.request(message()).response, 20)
        echoed = False
        if r.code.dotted == "4.01" and r.opt.echo is not None:
            # RFC 9175 §2.4: the server verifies the client's address before a larger answer;
            # repeat the request with the Echo value.
            m = message()
            m.opt.echo = r.opt.echo
            r = await asyncio.wait_for(ctx.request(m).response, 20)
            echoed = True
        out.append({
            "echoed": echoed,
            "name": name,
            "code": r.code.dotted,
            "type": str(r.mtype),
            "payload": r.payload.decode("utf-8", "replace"),
            "content_format": None if r.opt.content_format is None else int(r.opt.content_format),
            "max_age": r.opt.max_age,
            "size1": r.opt.size1,
        })

    await req("post", POST, "/sensor/aio-1", b'{"temp":21.5}', cf=50)
    await req("put", PUT, "/sensor/aio-1", b'{"temp":22}', cf=50)
    await req("post-non", POST, "/sensor/aio-2", b'{"non":true}', tuning=Unreliable)
    await req("well-known", GET, "/.well-known/core")
    await req("well-known-rt", GET, "/.well-known/core?rt=coapgw.health")
    await req("health", GET, "/health")
    await req("bad-json", POST, "/sensor/aio-3", b'{"temp":', cf=50)
    await req("not-object", POST, "/sensor/aio-3", b'[1,2]', cf=50)
    await req("xml", POST, "/sensor/aio-3", b'<a/>', cf=41)
    await req("bad-id", POST, "/sensor/bad%20id", b'{"x":1}', cf=50)
    await req("three-segments", POST, "/a/b/c", b'{"x":1}', cf=50)
    await req("delete", DELETE, "/sensor/aio-1")
    await req("unknown", GET, "/nothing-here")
    # aiocoap sends payloads over 1024 bytes block-wise (Block1): the gateway reassembles the
    # body, and stores it whole once the last block came.
    await req("blockwise", POST, "/sensor/aio-4", b'{"pad":"' + b"x" * 1500 + b'"}', cf=50)
    await ctx.shutdown()
    for o in out:
        print(json.dumps(o))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
