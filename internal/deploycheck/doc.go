// Package deploycheck holds no code: its tests read the Terraform under deploy/terraform with
// hcl/v2 and assert the deployment's security invariants: least-privilege IAM without wildcard
// actions, SQS and AWS IoT actions scoped to the queue, thing, thing-type and topic ARNs, policies
// only from aws_iam_policy_document, no access keys, IMDSv2, a dead-letter redrive with
// maxReceiveCount 5, encrypted queues, no SSH and only CoAP over UDP open to the world.
// testdata/bad is a deliberately broken fixture that every check must reject, so the checks are
// shown to be able to fail.
package deploycheck
