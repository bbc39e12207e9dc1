#!/usr/bin/env python3
"""A consumer of the 2018 CoAP-to-AWS-IoT ingestor's queue, written to its documented message
shape (docs/migrate-from-2018.md) as the 2018 processor read it: json.loads of the body, the
thing type and name from the first two non-empty segments of "path" (urlparse), the properties
from json.loads of "payload". It also checks that every message has exactly the 2018 keys with
their 2018 types, reads until it has COUNT messages or DEADLINE seconds passed, deletes what it
read, and prints one JSON line per message: {"type", "thing", "properties", "ip", "method",
"timestamp"}. A message that breaks the shape is printed as {"error": ...}.

usage: seed_consumer.py QUEUE_URL ENDPOINT COUNT DEADLINE
"""
import json
import sys
import time
from urllib.parse import urlparse

import boto3

queue_url, endpoint, count, deadline = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
KEYS = {"timestamp": int, "ip": str, "path": str, "method": str, "payload": str}

seen = 0
end = time.time() + deadline
while seen < count and time.time() < end:
    out = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    for message in out.get("Messages", []):
        seen += 1
        try:
            contents = json.loads(message["Body"])
            if set(contents) != set(KEYS):
                raise ValueError("keys %s" % sorted(contents))
            for k, t in KEYS.items():
                if type(contents[k]) is not t:
                    raise ValueError("%s is %s" % (k, type(contents[k]).__name__))
            path_parts = list(filter(None, urlparse(contents["path"]).path.split("/")))
            if len(path_parts) != 2:
                raise ValueError("path %s" % contents["path"])
            payload = json.loads(contents["payload"])
            print(json.dumps({"type": path_parts[0], "thing": path_parts[1], "properties": payload,
                              "ip": contents["ip"], "method": contents["method"],
                              "timestamp": contents["timestamp"]}), flush=True)
        except Exception as e:  # the 2018 processor printed and deleted such messages
            print(json.dumps({"error": str(e), "body": message["Body"]}), flush=True)
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
