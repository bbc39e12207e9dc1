# moto's server, with two fixes that make it behave like AWS for coapgw's tests.
#
# AWS IoT applies an UpdateThingShadow that carries a version atomically: of two updates made
# against the same version, one succeeds and the other gets 409 ConflictException. moto checks the
# version and stores the new shadow without a lock, and its server answers requests on several
# threads; under load two updates against the same version can both pass the check, both answer
# success with the same new version, and the second overwrites the first, whose properties are
# lost. That is a bug of the emulator that AWS does not have, so shadow updates and deletions run
# under one lock here.
#
# SQS never loses a message it accepted. moto's Queue.delete_message rebuilds the queue's list of
# messages from the list it started from and stores the new one, without the lock under which
# SendMessage appends: a message sent while another delete of the same queue was between reading
# and storing the list is in neither list and is gone, though SendMessage answered success (and a
# message deleted meanwhile comes back). A consumer that deletes in parallel while a gateway sends
# (TestAWSOutageUnderLoad: the backlog drains while the worker deletes) loses a record now and
# then. Deletes take the queue's own lock here. moto_server_test.go forces that interleaving.
import sys
import threading

from moto.iotdata import models
from moto.sqs import models as sqs_models

_lock = threading.Lock()


def _locked(method):
    def wrapper(self, *args, **kwargs):
        with _lock:
            return method(self, *args, **kwargs)

    return wrapper


models.IoTDataPlaneBackend.update_thing_shadow = _locked(models.IoTDataPlaneBackend.update_thing_shadow)
models.IoTDataPlaneBackend.delete_thing_shadow = _locked(models.IoTDataPlaneBackend.delete_thing_shadow)


def _queue_locked(method):
    def wrapper(self, *args, **kwargs):
        with self._messages_lock:  # the Condition SendMessage appends under (an RLock)
            return method(self, *args, **kwargs)

    return wrapper


sqs_models.Queue.delete_message = _queue_locked(sqs_models.Queue.delete_message)

if __name__ == "__main__":  # run as the server (python3 -c); imported by the test to check the fixes
    from moto.server import main

    main(sys.argv[1:])
