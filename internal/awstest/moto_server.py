# moto's server, with one fix that makes it behave like AWS IoT for coapgw's tests.
#
# AWS IoT applies an UpdateThingShadow that carries a version atomically: of two updates made
# against the same version, one succeeds and the other gets 409 ConflictException. moto checks the
# version and stores the new shadow without a lock, and its server answers requests on several
# threads; under load two updates against the same version can both pass the check, both answer
# success with the same new version, and the second overwrites the first, whose properties are
# lost. That is a bug of the emulator that AWS does not have, so shadow updates and deletions run
# under one lock here.
import sys
import threading

from moto.iotdata import models

_lock = threading.Lock()


def _locked(method):
    def wrapper(self, *args, **kwargs):
        with _lock:
            return method(self, *args, **kwargs)

    return wrapper


models.IoTDataPlaneBackend.update_thing_shadow = _locked(models.IoTDataPlaneBackend.update_thing_shadow)
models.IoTDataPlaneBackend.delete_thing_shadow = _locked(models.IoTDataPlaneBackend.delete_thing_shadow)

from moto.server import main  # noqa: E402

main(sys.argv[1:])
