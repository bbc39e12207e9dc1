# Forces, in moto's SQS backend, the interleaving that loses a message (see moto_server.py):
# delete B of message m2 is preempted inside its loop over the queue's messages (after a call,
# where CPython may switch threads); meanwhile another thread deletes m1 (delete A) and sends m3;
# then B resumes and stores the list it built. Prints one line per variant: "<variant> <bodies
# left in the queue>", moto as installed first, then with moto_server.py's fixes.
import inspect
import os
import sys
import threading

from moto.sqs import models

ORIGINAL = models.Queue.delete_message
CODE = ORIGINAL.__code__
LOOP_LINE = CODE.co_firstlineno + next(
    i for i, line in enumerate(inspect.getsource(ORIGINAL).splitlines())
    if line.strip() == "if message.had_receipt_handle(receipt_handle):"
)


def run(variant, n):
    backend = models.SQSBackend("us-east-1", "123456789012")
    name = "race-%d" % n
    backend.create_queue(name)
    queue = backend.get_queue(name)
    backend.send_message(name, "m1")
    backend.send_message(name, "m2")
    received = {m.body: m.receipt_handle for m in backend.receive_message(name, 10, 0, 60)}
    assert set(received) == {"m1", "m2"}, received

    def other():
        backend.delete_message(name, received["m1"])  # delete A
        backend.send_message(name, "m3")

    t = threading.Thread(target=other)
    seen = [0]

    def local(frame, event, arg):
        if event == "line" and frame.f_lineno == LOOP_LINE:
            seen[0] += 1
            if seen[0] == 2:  # B is in its loop, past a switch point
                t.start()
                t.join(1.0)  # returns at once unless delete A waits for B (the fix)
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code is CODE else None

    sys.settrace(tracer)
    try:
        backend.delete_message(name, received["m2"])  # delete B
    finally:
        sys.settrace(None)
    t.join()
    print(variant, ",".join(sorted(m.body for m in queue._messages)) or "-")


run("moto", 0)
exec(compile(os.environ["MOTO_SERVER_PY"], "moto_server.py", "exec"), {"__name__": "moto_server"})
run("fixed", 1)
