"""Interop client for TestFormatsEndToEnd: posts CBOR and SenML CBOR (encoded with cbor2) and
their JSON twin with aiocoap, and prints one JSON object per answer (name, code, payload).

Usage: python3 aiocoap_formats.py HOST:PORT BASE_TIME
"""
import asyncio
import json
import sys

import cbor2
from aiocoap import GET, POST, Context, Message


async def main(hostport, bt):
    ctx = await Context.create_client_context()
    out = []

    async def req(name, path, payload, cf):
        m = Message(code=POST, uri=f"coap://{hostport}{path}", payload=payload)
        m.opt.content_format = cf
        r = await asyncio.wait_for(ctx.request(m).response, 20)
        out.append({"name": name, "code": r.code.dotted, "payload": r.payload.decode("utf-8", "replace")})

    obj = {"temp": 21.5, "hum": 40, "env": {"lux": 300, "on": True}, "tags": ["a", 1], "note": "caf\u00e9"}
    await req("json", "/sensor/js-1", json.dumps(obj).encode(), 50)
    await req("cbor", "/sensor/cb-1", cbor2.dumps(obj), 60)
    # An hour of samples in one wake-up: SenML CBOR labels (RFC 8428 §6): bn -2, bt -3, bu -4,
    # n 0, v 2, t 6.
    pack = [{-2: "sm/", -3: bt, -4: "Cel", 0: "temp", 2: 20.0},
            {0: "temp", 6: 1800, 2: 21.0},
            {0: "temp", 6: 3600, 2: 22.5}]
    await req("senml-cbor", "/sensor/sm-1", cbor2.dumps(pack), 112)
    await req("cbor-bytes", "/sensor/cb-2", cbor2.dumps({"raw": b"\x01\x02"}), 60)
    await req("cbor-tag", "/sensor/cb-2", cbor2.dumps({"t": cbor2.CBORTag(1, 1700000000)}), 60)
    await req("senml-future", "/sensor/sm-2", cbor2.dumps([{0: "x", 2: 1.0, 6: bt + 3 * 3600}]), 112)
    # /health in the device's format: Accept 60 gets a CBOR map (after an Echo round trip,
    # RFC 9175, as the answer is larger than three times the request).
    def health():
        m = Message(code=GET, uri=f"coap://{hostport}/health")
        m.opt.accept = 60
        return m
    r = await asyncio.wait_for(ctx.request(health()).response, 20)
    if r.code.dotted == "4.01" and r.opt.echo is not None:
        m = health()
        m.opt.echo = r.opt.echo
        r = await asyncio.wait_for(ctx.request(m).response, 20)
    status = cbor2.loads(r.payload).get("status") if r.opt.content_format == 60 else None
    out.append({"name": "health-cbor", "code": r.code.dotted, "payload": f"cf={int(r.opt.content_format)} status={status}"})
    await ctx.shutdown()
    for o in out:
        print(json.dumps(o))


asyncio.run(main(sys.argv[1], int(sys.argv[2])))
