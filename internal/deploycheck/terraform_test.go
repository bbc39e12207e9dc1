package deploycheck

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// config is every top-level block of the .tf files under one directory tree.
type config struct {
	blocks []*hclsyntax.Block
	// locals by name, from every locals block (module boundaries are ignored: names in this
	// repository do not collide, and a collision would only make the checks stricter).
	locals map[string]hclsyntax.Expression
}

func load(t *testing.T, root string) *config {
	t.Helper()
	p := hclparse.NewParser()
	c := &config{locals: map[string]hclsyntax.Expression{}}
	n := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != root { // .terraform
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".tf") {
			return nil
		}
		f, diags := p.ParseHCLFile(path)
		if diags.HasErrors() {
			return fmt.Errorf("%s: %s", path, diags.Error())
		}
		n++
		for _, b := range f.Body.(*hclsyntax.Body).Blocks {
			c.blocks = append(c.blocks, b)
			if b.Type == "locals" {
				for name, a := range b.Body.Attributes {
					c.locals[name] = a.Expr
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("no .tf files under %s", root)
	}
	return c
}

// of returns the top-level blocks of a kind ("resource", "data") and type ("aws_sqs_queue").
func (c *config) of(kind, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, b := range c.blocks {
		if b.Type == kind && len(b.Labels) > 0 && b.Labels[0] == typ {
			out = append(out, b)
		}
	}
	return out
}

func name(b *hclsyntax.Block) string { return b.Type + "." + strings.Join(b.Labels, ".") }

func at(b *hclsyntax.Block) string {
	return fmt.Sprintf("%s (%s:%d)", name(b), filepath.Base(b.TypeRange.Filename), b.TypeRange.Start.Line)
}

func traversalText(tr hcl.Traversal) string {
	var sb strings.Builder
	for _, s := range tr {
		switch s := s.(type) {
		case hcl.TraverseRoot:
			sb.WriteString(s.Name)
		case hcl.TraverseAttr:
			sb.WriteString("." + s.Name)
		case hcl.TraverseIndex:
			sb.WriteString("[]")
		case hcl.TraverseSplat:
			sb.WriteString("[*]")
		}
	}
	return sb.String()
}

// renderings returns the strings an expression may evaluate to, as far as they can be known
// statically: literals verbatim, local.* and statement.value (in a dynamic "statement" block,
// the for_each elements) resolved, both arms of a conditional, each element of a tuple; any
// other reference is rendered as ${its.traversal}, any other computation as ${?}.
func (c *config) renderings(e hclsyntax.Expression, iter hclsyntax.Expression, depth int) []string {
	if depth > 20 {
		return []string{"${?}"}
	}
	switch e := e.(type) {
	case *hclsyntax.LiteralValueExpr:
		if e.Val.Type().FriendlyName() == "string" && e.Val.IsKnown() && !e.Val.IsNull() {
			return []string{e.Val.AsString()}
		}
		return []string{e.Val.GoString()}
	case *hclsyntax.TemplateWrapExpr:
		return c.renderings(e.Wrapped, iter, depth+1)
	case *hclsyntax.TemplateExpr:
		out := []string{""}
		for _, part := range e.Parts {
			var next []string
			for _, prefix := range out {
				for _, r := range c.renderings(part, iter, depth+1) {
					if len(next) < 256 {
						next = append(next, prefix+r)
					}
				}
			}
			out = next
		}
		return out
	case *hclsyntax.ParenthesesExpr:
		return c.renderings(e.Expression, iter, depth+1)
	case *hclsyntax.ObjectConsKeyExpr:
		if kw := hcl.ExprAsKeyword(e); kw != "" {
			return []string{kw}
		}
		return c.renderings(e.Wrapped, iter, depth+1)
	case *hclsyntax.ConditionalExpr:
		return append(c.renderings(e.TrueResult, iter, depth+1), c.renderings(e.FalseResult, iter, depth+1)...)
	case *hclsyntax.TupleConsExpr:
		var out []string
		for _, el := range e.Exprs {
			out = append(out, c.renderings(el, iter, depth+1)...)
		}
		return out
	case *hclsyntax.FunctionCallExpr:
		if e.Name == "concat" || e.Name == "compact" || e.Name == "distinct" || e.Name == "flatten" {
			var out []string
			for _, a := range e.Args {
				out = append(out, c.renderings(a, iter, depth+1)...)
			}
			return out
		}
		return []string{"${?}"}
	case *hclsyntax.ForExpr:
		return c.renderings(e.ValExpr, iter, depth+1)
	case *hclsyntax.ScopeTraversalExpr:
		tr := traversalText(e.Traversal)
		if root := e.Traversal.RootName(); root == "local" && len(e.Traversal) >= 2 {
			if a, ok := e.Traversal[1].(hcl.TraverseAttr); ok {
				if le, ok := c.locals[a.Name]; ok {
					return c.renderings(le, iter, depth+1)
				}
			}
		}
		if tr == "statement.value" && iter != nil {
			return c.renderings(iter, nil, depth+1)
		}
		return []string{"${" + tr + "}"}
	case *hclsyntax.RelativeTraversalExpr:
		return []string{"${?}"}
	}
	return []string{"${?}"}
}

// statement is one IAM policy statement, from a statement block or a dynamic "statement" block.
type statement struct {
	where     string
	block     *hclsyntax.Body
	iter      hclsyntax.Expression // for_each of the dynamic block, if any
	actions   []string
	resources []string
	effect    string
}

func (c *config) statements() []statement {
	var out []statement
	for _, doc := range c.of("data", "aws_iam_policy_document") {
		for _, b := range doc.Body.Blocks {
			var st statement
			switch {
			case b.Type == "statement":
				st = statement{where: at(doc), block: b.Body}
			case b.Type == "dynamic" && len(b.Labels) == 1 && b.Labels[0] == "statement":
				st = statement{where: at(doc) + " dynamic", iter: nil}
				if fe, ok := b.Body.Attributes["for_each"]; ok {
					st.iter = fe.Expr
				}
				for _, cb := range b.Body.Blocks {
					if cb.Type == "content" {
						st.block = cb.Body
					}
				}
				if st.block == nil {
					continue
				}
			default:
				continue
			}
			st.effect = "Allow"
			if a, ok := st.block.Attributes["effect"]; ok {
				st.effect = strings.Join(c.renderings(a.Expr, st.iter, 0), "|")
			}
			if a, ok := st.block.Attributes["sid"]; ok {
				st.where += " sid " + strings.Join(c.renderings(a.Expr, st.iter, 0), "|")
			}
			for attr, dst := range map[string]*[]string{
				"actions": &st.actions, "not_actions": &st.actions,
				"resources": &st.resources, "not_resources": &st.resources,
			} {
				if a, ok := st.block.Attributes[attr]; ok {
					if strings.HasPrefix(attr, "not_") {
						*dst = append(*dst, "not_*") // an inverted list is as broad as a wildcard
					}
					*dst = append(*dst, c.renderings(a.Expr, st.iter, 0)...)
				}
			}
			out = append(out, st)
		}
	}
	return out
}

// resourceKind: which ARN an AWS IoT action must be scoped to.
func iotResourceKind(action string) string {
	switch action {
	case "iot:CreateThingType", "iot:DescribeThingType":
		return ":thingtype/"
	case "iot:CreateThing", "iot:DescribeThing", "iot:UpdateThingShadow", "iot:GetThingShadow":
		return ":thing/"
	case "iot:Publish", "iot:Receive":
		return ":topic/"
	case "iot:Subscribe":
		return ":topicfilter/"
	case "iot:Connect":
		return ":client/"
	}
	return ""
}

// checkIAM: no wildcard (or inverted) actions anywhere; SQS actions only on aws_sqs_queue ARNs;
// AWS IoT actions only the known ones, on thing, thing-type or topic ARNs; never Resource "*"
// for sqs or iot actions; Secrets Manager only secretsmanager:GetSecretValue on exactly
// var.fleet_key_secret_arn; KMS only kms:Decrypt on var.fleet_key_kms_key_arn, through Secrets
// Manager (a kms:ViaService condition).
func checkIAM(c *config) (violations []string, statements int) {
	for _, st := range c.statements() {
		statements++
		if len(st.actions) == 0 {
			violations = append(violations, st.where+": statement without actions")
		}
		for _, a := range st.actions {
			if strings.Contains(a, "*") {
				violations = append(violations, fmt.Sprintf("%s: wildcard action %q", st.where, a))
			}
			if strings.Contains(a, "${") {
				violations = append(violations, fmt.Sprintf("%s: action %q is not a literal and cannot be checked", st.where, a))
			}
		}
		if st.effect != "Allow" {
			continue
		}
		violations = append(violations, checkFleetKeyStatement(c, st)...)
		for _, a := range st.actions {
			service, _, _ := strings.Cut(a, ":")
			violations = append(violations, checkScopedToModule(st, a, service)...)
			if service != "sqs" && service != "iot" {
				continue
			}
			if len(st.resources) == 0 {
				violations = append(violations, fmt.Sprintf("%s: %s without resources", st.where, a))
			}
			for _, r := range st.resources {
				switch {
				case r == "*" || r == "not_*":
					violations = append(violations, fmt.Sprintf("%s: %s on resource %q", st.where, a, r))
				case r == "":
					// the empty arm of a conditional that is not taken when the statement exists
				case service == "sqs" && !strings.HasPrefix(r, "${aws_sqs_queue."):
					violations = append(violations, fmt.Sprintf("%s: %s on %q, not a queue of this module", st.where, a, r))
				case service == "iot" && iotResourceKind(a) == "":
					violations = append(violations, fmt.Sprintf("%s: unexpected AWS IoT action %s", st.where, a))
				case service == "iot" && !strings.Contains(r, ":iot:") || service == "iot" && !strings.Contains(r, iotResourceKind(a)):
					violations = append(violations, fmt.Sprintf("%s: %s on %q, want an AWS IoT %s ARN", st.where, a, r, strings.Trim(iotResourceKind(a), ":/")))
				}
			}
		}
	}
	return violations, statements
}

// moduleScoped: services whose actions may only name resources of this module, by the
// attribute that must start every resource (the gateway completing its own group's lifecycle
// action; the CloudWatch agent and the functions writing to their own log groups).
var moduleScoped = map[string]string{
	"autoscaling": "${aws_autoscaling_group.",
	"logs":        "${aws_cloudwatch_log_group.",
}

// checkScopedToModule: an autoscaling or logs action only on this module's group or log groups.
func checkScopedToModule(st statement, action, service string) (violations []string) {
	prefix, ok := moduleScoped[service]
	if !ok || st.effect != "Allow" {
		return nil
	}
	if len(st.resources) == 0 {
		return []string{fmt.Sprintf("%s: %s without resources", st.where, action)}
	}
	for _, r := range st.resources {
		if !strings.HasPrefix(r, prefix) {
			violations = append(violations, fmt.Sprintf("%s: %s on %q, want %s...", st.where, action, r, prefix))
		}
	}
	return violations
}

// checkDrainHook: every Auto Scaling group holds terminating instances for the spool drain: a
// lifecycle hook on autoscaling:EC2_INSTANCE_TERMINATING (an initial_lifecycle_hook block or an
// aws_autoscaling_lifecycle_hook naming the group), so scale-in does not delete a spool volume
// whose records were acknowledged but not yet forwarded.
func checkDrainHook(c *config) (violations []string, groups int) {
	const terminating = "autoscaling:EC2_INSTANCE_TERMINATING"
	hooked := map[string]bool{}
	for _, h := range c.of("resource", "aws_autoscaling_lifecycle_hook") {
		g, okG := h.Body.Attributes["autoscaling_group_name"]
		tr, okT := h.Body.Attributes["lifecycle_transition"]
		if okG && okT && slices.Contains(c.renderings(tr.Expr, nil, 0), terminating) {
			for _, r := range c.renderings(g.Expr, nil, 0) {
				hooked[r] = true
			}
		}
	}
	for _, g := range c.of("resource", "aws_autoscaling_group") {
		groups++
		ok := hooked["${aws_autoscaling_group."+g.Labels[1]+".name}"]
		for _, b := range g.Body.Blocks {
			if tr, has := b.Body.Attributes["lifecycle_transition"]; b.Type == "initial_lifecycle_hook" && has &&
				slices.Contains(c.renderings(tr.Expr, nil, 0), terminating) {
				ok = true
			}
		}
		if !ok {
			violations = append(violations, fmt.Sprintf("%s: no %s lifecycle hook: scale-in deletes spools that were not drained", at(g), terminating))
		}
	}
	return violations, groups
}

// allowedManagedPolicies are the only AWS-managed policies a role may have attached.
var allowedManagedPolicies = []string{"AmazonSSMManagedInstanceCore"}

// checkPolicySources: every policy is built from an aws_iam_policy_document (so checkIAM sees it),
// and only allow-listed managed policies are attached.
func checkPolicySources(c *config) (violations []string) {
	fromDocument := func(b *hclsyntax.Block, attr string) {
		a, ok := b.Body.Attributes[attr]
		if !ok {
			return
		}
		st, ok := a.Expr.(*hclsyntax.ScopeTraversalExpr)
		if !ok || !strings.HasPrefix(traversalText(st.Traversal), "data.aws_iam_policy_document.") {
			violations = append(violations, fmt.Sprintf("%s: %s is not data.aws_iam_policy_document.*.json", at(b), attr))
		}
	}
	for _, typ := range []string{"aws_iam_role_policy", "aws_iam_policy", "aws_iam_user_policy", "aws_iam_group_policy", "aws_sqs_queue_policy", "aws_sns_topic_policy", "aws_iot_policy"} {
		for _, b := range c.of("resource", typ) {
			fromDocument(b, "policy")
		}
	}
	for _, b := range c.of("resource", "aws_iam_role") {
		fromDocument(b, "assume_role_policy")
		for _, ib := range b.Body.Blocks {
			if ib.Type == "inline_policy" {
				fromDocument(ib, "policy")
			}
		}
	}
	for _, b := range c.of("resource", "aws_iam_role_policy_attachment") {
		a, ok := b.Body.Attributes["policy_arn"]
		if !ok {
			continue
		}
		for _, r := range c.renderings(a.Expr, nil, 0) {
			if !slices.ContainsFunc(allowedManagedPolicies, func(p string) bool { return strings.HasSuffix(r, ":policy/"+p) }) {
				violations = append(violations, fmt.Sprintf("%s: attaches %q, not in %v", at(b), r, allowedManagedPolicies))
			}
		}
	}
	return violations
}

// checkNoAccessKeys: no long-lived credentials are created.
func checkNoAccessKeys(c *config) (violations []string) {
	for _, typ := range []string{"aws_iam_access_key", "aws_iam_user_login_profile"} {
		for _, b := range c.of("resource", typ) {
			violations = append(violations, at(b)+": long-lived credentials; use instance profiles and roles")
		}
	}
	return violations
}

// checkIMDSv2: every launch template and instance requires IMDSv2 tokens.
func checkIMDSv2(c *config) (violations []string, checked int) {
	for _, typ := range []string{"aws_launch_template", "aws_instance"} {
		for _, b := range c.of("resource", typ) {
			checked++
			ok := false
			for _, mb := range b.Body.Blocks {
				if mb.Type != "metadata_options" {
					continue
				}
				if a, found := mb.Body.Attributes["http_tokens"]; found {
					r := c.renderings(a.Expr, nil, 0)
					ok = len(r) == 1 && r[0] == "required"
				}
				if a, found := mb.Body.Attributes["http_endpoint"]; found {
					if r := c.renderings(a.Expr, nil, 0); len(r) != 1 || (r[0] != "enabled" && r[0] != "disabled") {
						ok = false
					}
				}
			}
			if !ok {
				violations = append(violations, at(b)+`: metadata_options.http_tokens must be "required" (IMDSv2)`)
			}
		}
	}
	return violations, checked
}

// checkQueues: every queue encrypted; a dead-letter redrive with maxReceiveCount 5 exists and
// every redrive policy uses 5.
func checkQueues(c *config) (violations []string, redrives int) {
	queues := c.of("resource", "aws_sqs_queue")
	for _, b := range queues {
		sse, kms := b.Body.Attributes["sqs_managed_sse_enabled"], b.Body.Attributes["kms_master_key_id"]
		if kms == nil && (sse == nil || !slices.Equal(c.renderings(sse.Expr, nil, 0), []string{"cty.True"})) {
			violations = append(violations, at(b)+": sqs_managed_sse_enabled must be true (or a KMS key set)")
		}
	}
	redrive := func(b *hclsyntax.Block, e hclsyntax.Expression) {
		redrives++
		call, ok := e.(*hclsyntax.FunctionCallExpr)
		if !ok || call.Name != "jsonencode" || len(call.Args) != 1 {
			violations = append(violations, at(b)+": redrive_policy must be jsonencode({...}) so it can be checked")
			return
		}
		obj, ok := call.Args[0].(*hclsyntax.ObjectConsExpr)
		if !ok {
			violations = append(violations, at(b)+": redrive_policy must be jsonencode of an object literal")
			return
		}
		var count, target []string
		for _, it := range obj.Items {
			k := c.renderings(it.KeyExpr, nil, 0)
			if len(k) != 1 {
				continue
			}
			switch k[0] {
			case "maxReceiveCount":
				count = c.renderings(it.ValueExpr, nil, 0)
			case "deadLetterTargetArn":
				target = c.renderings(it.ValueExpr, nil, 0)
			}
		}
		if !slices.Equal(count, []string{"cty.NumberIntVal(5)"}) && !slices.Equal(count, []string{"5"}) {
			violations = append(violations, fmt.Sprintf("%s: redrive maxReceiveCount is %v, want 5", at(b), count))
		}
		if len(target) != 1 || !strings.HasPrefix(target[0], "${aws_sqs_queue.") || !strings.HasSuffix(target[0], ".arn}") {
			violations = append(violations, fmt.Sprintf("%s: redrive deadLetterTargetArn is %v, want a dead-letter queue of this module", at(b), target))
		}
	}
	for _, b := range queues {
		if a, ok := b.Body.Attributes["redrive_policy"]; ok {
			redrive(b, a.Expr)
		}
	}
	for _, b := range c.of("resource", "aws_sqs_queue_redrive_policy") {
		if a, ok := b.Body.Attributes["redrive_policy"]; ok {
			redrive(b, a.Expr)
		}
	}
	if len(queues) > 0 && redrives == 0 {
		violations = append(violations, "no aws_sqs_queue has a redrive_policy to a dead-letter queue")
	}
	return violations, redrives
}

// checkIngress: no SSH, and nothing but CoAP's UDP ports open to the world (the HTTP/metrics
// port is reachable only from inside the VPC).
func checkIngress(c *config) (violations []string, rules int) {
	check := func(b *hclsyntax.Block, body *hclsyntax.Body, cidrAttrs ...string) {
		rules++
		get := func(attr string) []string {
			if a, ok := body.Attributes[attr]; ok {
				return c.renderings(a.Expr, nil, 0)
			}
			return nil
		}
		port := strings.Join(get("from_port"), "|") + "-" + strings.Join(get("to_port"), "|")
		proto := strings.Join(append(get("ip_protocol"), get("protocol")...), "|")
		if strings.Contains(port, "cty.NumberIntVal(22)") || proto == "-1" || proto == "all" {
			violations = append(violations, fmt.Sprintf("%s: ingress %s %s (SSH or all traffic); use SSM Session Manager", at(b), proto, port))
		}
		var world bool
		for _, attr := range cidrAttrs {
			for _, r := range get(attr) {
				world = world || r == "0.0.0.0/0" || r == "::/0"
			}
		}
		if world && proto != "udp" {
			violations = append(violations, fmt.Sprintf("%s: %s port %s open to the world; only CoAP over UDP may be", at(b), proto, port))
		}
	}
	for _, b := range c.of("resource", "aws_vpc_security_group_ingress_rule") {
		check(b, b.Body, "cidr_ipv4", "cidr_ipv6")
	}
	for _, b := range c.of("resource", "aws_security_group_rule") {
		if t := b.Body.Attributes["type"]; t != nil && slices.Equal(c.renderings(t.Expr, nil, 0), []string{"ingress"}) {
			check(b, b.Body, "cidr_blocks", "ipv6_cidr_blocks")
		}
	}
	for _, b := range c.of("resource", "aws_security_group") {
		for _, ib := range b.Body.Blocks {
			if ib.Type == "ingress" {
				check(b, ib.Body, "cidr_blocks", "ipv6_cidr_blocks")
			}
		}
	}
	return violations, rules
}

func report(t *testing.T, check string, violations []string) {
	t.Helper()
	for _, v := range violations {
		t.Errorf("%s: %s", check, v)
	}
}

func TestDeployTerraform(t *testing.T) {
	c := load(t, filepath.Join("..", "..", "deploy", "terraform"))

	for _, st := range c.statements() {
		t.Logf("%s: %v on %v", st.where, st.actions, st.resources)
	}
	v, n := checkIAM(c)
	report(t, "iam", v)
	// Guard against a vacuous pass (e.g. the walk finding nothing): the module has at least the
	// processor's six statements, the gateway's and the canary's.
	if n < 8 {
		t.Errorf("iam: only %d policy statements found", n)
	}
	report(t, "policy sources", checkPolicySources(c))
	report(t, "access keys", checkNoAccessKeys(c))
	v, n = checkIMDSv2(c)
	report(t, "imdsv2", v)
	if n == 0 {
		t.Error("imdsv2: no launch template found")
	}
	v, n = checkQueues(c)
	report(t, "queues", v)
	if n == 0 {
		t.Error("queues: no redrive policy found")
	}
	v, n = checkIngress(c)
	report(t, "ingress", v)
	if n < 3 {
		t.Errorf("ingress: only %d rules found", n)
	}
	v, n = checkPlainCoAP(c)
	report(t, "plain coap", v)
	if n == 0 {
		t.Error("plain coap: no module with security groups or load balancers found")
	}
	report(t, "fleet key", checkFleetKey(c, "gateway", "canary"))
	v, n = checkDrainHook(c)
	report(t, "drain hook", v)
	if n == 0 {
		t.Error("drain hook: no Auto Scaling group found")
	}
}

// TestBadFixture shows that every check can fail: testdata/bad breaks each rule once.
func TestBadFixture(t *testing.T) {
	c := load(t, filepath.Join("testdata", "bad"))
	want := map[string][]string{
		"iam": {
			`wildcard action "iot:*"`,
			`wildcard action "sqs:*"`,
			`on resource "*"`,
			`sqs:SendMessage on "arn:aws:sqs:eu-west-1:123456789012:other", not a queue of this module`,
			`iot:UpdateThingShadow on "arn:aws:iot:eu-west-1:123456789012:thingtype/x", want an AWS IoT thing ARN`,
			`wildcard action "not_*"`,
			`unexpected AWS IoT action iot:DeleteThing`,
			`autoscaling:CompleteLifecycleAction on "*", want ${aws_autoscaling_group.`,
			`logs:PutLogEvents on "arn:aws:logs:eu-west-1:123456789012:log-group:other:*", want ${aws_cloudwatch_log_group.`,
		},
		"drain hook":     {"aws_autoscaling_group.unhooked (main.tf:"},
		"policy sources": {"is not data.aws_iam_policy_document.*.json", "AdministratorAccess"},
		"access keys":    {"aws_iam_access_key.ci"},
		"imdsv2":         {"aws_launch_template.optional", "aws_instance.none"},
		"queues":         {"maxReceiveCount is [cty.NumberIntVal(10)], want 5", "sqs_managed_sse_enabled must be true"},
		"ingress":        {"aws_vpc_security_group_ingress_rule.ssh", "tcp port cty.NumberIntVal(8080)-cty.NumberIntVal(8080) open to the world"},
		"fleet key iam": {
			`secretsmanager:GetSecretValue on "arn:aws:secretsmanager:eu-west-1:123456789012:secret:*", want exactly var.fleet_key_secret_arn`,
			`unexpected Secrets Manager action secretsmanager:ListSecrets`,
			`kms:Decrypt on "*", want exactly var.fleet_key_kms_key_arn`,
			`kms:Decrypt without a kms:ViaService condition`,
		},
		"plain coap": {
			"variable allow_plain_coap must exist and default to false",
			"aws_vpc_security_group_ingress_rule.coap_always (main.tf:",
			"aws_lb_listener.coap_always (main.tf:",
			"aws_lb_target_group.coap_unknown (main.tf:", // count from a data source: cannot be shown closed
			"UDP 5684 (DTLS) let in by [] with allow_plain_coap = false (exposure = eip), want [ingress]",
		},
		"fleet key": {
			"no data.aws_iam_policy_document.canary: the canary cannot read the fleet key",
			"aws_iam_policy_document.gateway (main.tf:", // reads another secret, not var.fleet_key_secret_arn
			"fleet_key_secret_arn has a default; it must be required",
			`validation accepts "arn:aws:secretsmanager:eu-west-1:123456789012:secret:*"`,
			`validation accepts "arn:aws:secretsmanager:eu-west-1:123456789012:secret:coapgw/fleet-key"`,
		},
	}
	iam, _ := checkIAM(c)
	imds, _ := checkIMDSv2(c)
	queues, _ := checkQueues(c)
	ingress, _ := checkIngress(c)
	plain, _ := checkPlainCoAP(c)
	hook, _ := checkDrainHook(c)
	var fleetIAM []string
	for _, st := range c.statements() {
		fleetIAM = append(fleetIAM, checkFleetKeyStatement(c, st)...)
	}
	got := map[string][]string{
		"fleet key iam":  fleetIAM,
		"plain coap":     plain,
		"fleet key":      checkFleetKey(c, "gateway", "canary"),
		"iam":            iam,
		"policy sources": checkPolicySources(c),
		"access keys":    checkNoAccessKeys(c),
		"imdsv2":         imds,
		"queues":         queues,
		"ingress":        ingress,
		"drain hook":     hook,
	}
	for check, subs := range want {
		for _, sub := range subs {
			if !slices.ContainsFunc(got[check], func(v string) bool { return strings.Contains(v, sub) }) {
				t.Errorf("%s: no violation mentioning %q; got:\n  %s", check, sub, strings.Join(got[check], "\n  "))
			}
		}
	}
}
