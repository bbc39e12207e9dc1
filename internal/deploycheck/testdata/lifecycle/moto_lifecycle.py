# moto's server for the lifecycle drain test (lifecycle_test.go), with two additions:
#
# 1. CompleteLifecycleAction. moto 5.2.1 stores lifecycle hooks (PutLifecycleHook,
#    DescribeLifecycleHooks) but has no Terminating:Wait state and no CompleteLifecycleAction.
#    This one checks what AWS checks (the group, a hook of that name on it, an instance of the
#    group, CONTINUE or ABANDON), sets the instance's lifecycle state to Terminating:Proceed
#    (what AWS reports after a completed termination hook) and otherwise does nothing.
# 2. A fake instance metadata service (IMDSv2) on a second port: PUT /latest/api/token, then
#    GET /latest/meta-data/instance-id and /latest/meta-data/autoscaling/target-lifecycle-state
#    with the token. The test sets the instance and the target state with
#    POST /_test?instance=ID&state=STATE; the state path answers 404 until one is set, as AWS
#    does before the instance is InService.
#
# usage: python3 moto_lifecycle.py MOTO_PORT IMDS_PORT
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import EmptyResult


def complete_lifecycle_action(self):
    as_name = self._get_param("AutoScalingGroupName")
    hook = self._get_param("LifecycleHookName")
    instance_id = self._get_param("InstanceId")
    result = self._get_param("LifecycleActionResult")
    backend = self.autoscaling_backend
    group = backend.autoscaling_groups.get(as_name)
    if group is None:
        raise ValidationError(f"Group {as_name} not found")
    if not backend.describe_lifecycle_hooks(as_name, [hook]):
        raise ValidationError(f"No lifecycle hook found with name {hook} for group {as_name}")
    if result not in ("CONTINUE", "ABANDON"):
        raise ValidationError(f"LifecycleActionResult {result} is not CONTINUE or ABANDON")
    for state in group.instance_states:
        if state.instance.id == instance_id:
            state.lifecycle_state = "Terminating:Proceed"
            return EmptyResult()
    raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")


AutoScalingResponse.complete_lifecycle_action = complete_lifecycle_action

imds = {"instance": "", "state": "", "token": "imds-token-for-the-test"}
imds_lock = threading.Lock()


class IMDS(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body=""):
        b = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def do_PUT(self):
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.reply(200, imds["token"])
        return self.reply(400)

    def do_POST(self):
        u = urllib.parse.urlparse(self.path)
        if u.path != "/_test":
            return self.reply(404)
        q = urllib.parse.parse_qs(u.query)
        with imds_lock:
            for k in ("instance", "state"):
                if k in q:
                    imds[k] = q[k][0]
        return self.reply(200)

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != imds["token"]:
            return self.reply(401)
        with imds_lock:
            values = {
                "/latest/meta-data/instance-id": imds["instance"],
                "/latest/meta-data/autoscaling/target-lifecycle-state": imds["state"],
            }
        v = values.get(self.path, "")
        return self.reply(200, v) if v else self.reply(404)


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), IMDS)
threading.Thread(target=server.serve_forever, daemon=True).start()

from moto.server import main  # noqa: E402

main(["-H", "127.0.0.1", "-p", sys.argv[1]])
