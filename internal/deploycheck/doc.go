// Package deploycheck holds no code: its tests read the Terraform under deploy/terraform with
// hcl/v2 and assert the deployment's security invariants: least-privilege IAM without wildcard
// actions, SQS and AWS IoT actions scoped to the queue, thing, thing-type and topic ARNs,
// autoscaling and logs actions to the module's own group and log groups, policies only from
// aws_iam_policy_document, no access keys, IMDSv2, a dead-letter redrive with maxReceiveCount 5,
// encrypted queues, no SSH, only CoAP over UDP open to the world, and a termination lifecycle hook
// on every Auto Scaling group (the spool drain).
//
// The deployment speaks DTLS by default. A small evaluator (variables' defaults, locals, count,
// for_each and ports; anything that needs a plan is unknown, and unknown fails) shows that with
// allow_plain_coap false nothing lets UDP 5683 in, in either exposure mode, that 5683 opens with
// allow_plain_coap true, and that the DTLS port is always open. The fleet key secret is readable
// by the gateway and canary roles on exactly var.fleet_key_secret_arn, a required variable whose
// validation rejects wildcards and partial ARNs, and its KMS key only through Secrets Manager.
//
// TestLifecycleDrain runs the scale-in path the module installs (deploy/systemd/coapgw-lifecycle)
// against moto's Auto Scaling and SQS, a fake instance metadata service and the real binary
// (testdata/lifecycle): records acknowledged while SQS was unreachable are all in the queue after
// the termination hook's drain, and the lifecycle action is completed.
//
// testdata/bad is a deliberately broken fixture that every check must reject, so the checks are
// shown to be able to fail.
package deploycheck
