#!/usr/bin/env python3
"""A coapgw device in Python with aiocoap: it reports readings to the gateway with the sending
policy of docs/devices.md.

  - Readings go out as NON (one transmission, no wait for an ACK) while the oldest unconfirmed
    reading is younger than --non-deadline; the gateway answers a NON with a NON 2.04 once the
    record is stored, and the device listens for it for --listen seconds.
  - Past the deadline the reading goes out as CON, which aiocoap retransmits as RFC 7252 says
    (ACK_TIMEOUT 2 s, ACK_RANDOM_FACTOR 1.5, doubling, MAX_RETRANSMIT 4). A 2.04 confirms every
    older reading too.
  - 5.03 Service Unavailable: wait Max-Age seconds (60 when absent), then send the reading again
    as CON. 4.01 with an Echo option: repeat once with that Echo value (RFC 9175). Any other
    4.xx: drop the reading (it will never be accepted as sent) and go on.
  - No answer at all to a CON: keep the reading unconfirmed and try again with the next one.

Each reading is {"seq": n, "temp": ...}; the device prints one JSON line per transmission and
answer ({"t", "seq", "type", "code", "max_age"}; t in seconds since start) and a last line {"done": true, "confirmed": [...]}.

  pip install aiocoap
  python3 examples/python/device.py --gateway coap://127.0.0.1 --thing sensor/py-1 --readings 5

Plain CoAP only: for DTLS with a pre-shared key aiocoap needs its tinydtls transport (pip
install aiocoap[tinydtls]) and ctx.client_credentials (see docs/devices.md).
"""
import argparse
import asyncio
import json
import random
import sys
import time

from aiocoap import POST, Context, Message, Reliable, Unreliable
from aiocoap import error as coap_error

JSON = 50
DEFAULT_MAX_AGE = 60  # RFC 7252 §5.10.5


START = time.monotonic()


def log(**fields):
    """Prints one JSON line, with t: seconds since the device started."""
    print(json.dumps({"t": round(time.monotonic() - START, 3), **fields}, sort_keys=True), flush=True)


class Device:
    def __init__(self, ctx, args):
        self.ctx = ctx
        self.uri = f"{args.gateway.rstrip('/')}/{args.thing}"
        self.non_deadline = args.non_deadline
        self.listen = args.listen
        self.unconfirmed_since = None  # time of the oldest reading not yet answered 2.04
        self.confirmed = []

    async def exchange(self, seq, payload, confirmable, echo=None):
        """Sends one request and returns the response, or None when none came."""
        msg = Message(code=POST, uri=self.uri, payload=payload,
                      transport_tuning=Reliable if confirmable else Unreliable)
        msg.opt.content_format = JSON
        if echo is not None:
            msg.opt.echo = echo
        kind = "CON" if confirmable else "NON"
        request = self.ctx.request(msg)
        try:
            if confirmable:
                # aiocoap retransmits until an answer or MAX_RETRANSMIT (about 93 s at most).
                resp = await request.response
            else:
                resp = await asyncio.wait_for(request.response, self.listen)
        except (asyncio.TimeoutError, coap_error.Error) as e:
            log(seq=seq, type=kind, code="none", error=type(e).__name__)
            return None
        log(seq=seq, type=kind, code=resp.code.dotted, max_age=resp.opt.max_age,
            diagnostic="" if resp.code.is_successful() else resp.payload.decode("utf-8", "replace"))
        return resp

    async def report(self, seq, reading):
        payload = json.dumps(reading, separators=(",", ":")).encode()
        now = time.monotonic()
        if self.unconfirmed_since is None:
            self.unconfirmed_since = now
        confirmable = now - self.unconfirmed_since >= self.non_deadline
        echo, echoed = None, False
        while True:
            resp = await self.exchange(seq, payload, confirmable, echo)
            if resp is None:
                return  # NON unanswered, or the network is down: try again with the next reading
            code = resp.code.dotted
            if code == "2.04":
                self.unconfirmed_since = None  # stored; nothing older needs resending
                self.confirmed.append(seq)
                return
            if code == "5.03":
                # The gateway is full, shutting down, or this device is over its rate: back off
                # as told, then insist.
                await asyncio.sleep(resp.opt.max_age if resp.opt.max_age is not None else DEFAULT_MAX_AGE)
                confirmable = True
                continue
            if code == "4.01" and resp.opt.echo is not None and not echoed:
                echo, echoed = resp.opt.echo, True  # prove the address, once
                continue
            return  # another 4.xx or 5.xx: dropped, never accepted as sent


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gateway", default="coap://127.0.0.1", help="the gateway's coap:// URI")
    p.add_argument("--thing", default="sensor/py-1", help="{type}/{id}")
    p.add_argument("--readings", type=int, default=5, help="readings to send, then exit")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    p.add_argument("--non-deadline", type=float, default=900.0,
                   help="seconds a reading may go unconfirmed as NON before CON (0: always CON)")
    p.add_argument("--listen", type=float, default=0.5, help="seconds to listen for a NON's answer")
    args = p.parse_args()
    ctx = await Context.create_client_context()
    dev = Device(ctx, args)
    try:
        for seq in range(1, args.readings + 1):
            await dev.report(seq, {"seq": seq, "temp": round(20 + random.random() * 5, 2)})
            if seq < args.readings:
                await asyncio.sleep(args.interval)
    finally:
        await ctx.shutdown()
    log(done=True, confirmed=dev.confirmed)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
