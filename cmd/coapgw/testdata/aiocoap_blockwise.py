"""Interop client for TestBlockwiseAiocoap: posts a 9,000-byte JSON object (aiocoap sends it
block-wise, Block1) and gets /.well-known/core in 16-byte blocks (Block2); prints one JSON object
with the answers.

Usage: python3 aiocoap_blockwise.py HOST:PORT
"""
import asyncio
import json
import sys

from aiocoap import GET, POST, Context, Message
from aiocoap.optiontypes import BlockOption


async def main(hostport):
    ctx = await Context.create_client_context()
    body = b'{"pad":"' + b"x" * (9000 - 10) + b'"}'
    m = Message(code=POST, uri=f"coap://{hostport}/sensor/aio-9k", payload=body)
    m.opt.content_format = 50
    post = await asyncio.wait_for(ctx.request(m).response, 30)
    m = Message(code=GET, uri=f"coap://{hostport}/.well-known/core")
    m.opt.block2 = BlockOption.BlockwiseTuple(0, False, 0)
    wk = await asyncio.wait_for(ctx.request(m).response, 30)
    print(json.dumps({"post": post.code.dotted, "well_known": wk.code.dotted,
                      "well_known_payload": wk.payload.decode("utf-8", "replace")}))
    await ctx.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
