package deploycheck

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// The deployment speaks DTLS by default: plain CoAP (UDP 5683) carries no credential, so any host
// that reaches it can write any thing's shadow. These checks assert that 5683 is closed unless
// allow_plain_coap is set, that the DTLS port is always open, and that the fleet master key is
// readable by the gateways and the canary and nothing wider.

const (
	plainCoAPPort    = 5683
	defaultCoAPSPort = 5684
	fleetKeyVar      = "${var.fleet_key_secret_arn}"
	fleetKeyKMSVar   = "${var.fleet_key_kms_key_arn}"
)

// checkFleetKeyStatement: a Secrets Manager or KMS action in an Allow statement is the fleet
// key's: secretsmanager:GetSecretValue on exactly var.fleet_key_secret_arn, kms:Decrypt on
// var.fleet_key_kms_key_arn with a kms:ViaService condition.
func checkFleetKeyStatement(c *config, st statement) (violations []string) {
	for _, a := range st.actions {
		service, _, _ := strings.Cut(a, ":")
		var want string
		switch {
		case service == "secretsmanager" && a == "secretsmanager:GetSecretValue":
			want = fleetKeyVar
		case service == "secretsmanager":
			violations = append(violations, fmt.Sprintf("%s: unexpected Secrets Manager action %s", st.where, a))
			continue
		case service == "kms" && a == "kms:Decrypt":
			want = fleetKeyKMSVar
			if !hasCondition(c, st, "kms:ViaService") {
				violations = append(violations, fmt.Sprintf("%s: kms:Decrypt without a kms:ViaService condition", st.where))
			}
		case service == "kms":
			violations = append(violations, fmt.Sprintf("%s: unexpected KMS action %s", st.where, a))
			continue
		default:
			continue
		}
		if len(st.resources) == 0 {
			violations = append(violations, fmt.Sprintf("%s: %s without resources", st.where, a))
		}
		for _, r := range st.resources {
			if r != want && r != "" { // "": the empty arm of a conditional
				violations = append(violations, fmt.Sprintf("%s: %s on %q, want exactly %s", st.where, a, r, strings.Trim(want, "${}")))
			}
		}
	}
	return violations
}

func hasCondition(c *config, st statement, variable string) bool {
	for _, b := range st.block.Blocks {
		if a, ok := b.Body.Attributes["variable"]; ok && b.Type == "condition" {
			if slices.Equal(c.renderings(a.Expr, st.iter, 0), []string{variable}) {
				return true
			}
		}
	}
	return false
}

// secretARNSamples are values fleet_key_secret_arn's validation must reject (a wildcard, or a
// partial ARN that IAM would match against nothing or, with -??????, against any suffix) and the
// one it must accept.
var (
	secretARNRejected = []string{
		"*",
		"arn:aws:secretsmanager:eu-west-1:123456789012:secret:*",
		"arn:aws:secretsmanager:eu-west-1:123456789012:secret:coapgw/*",
		"arn:aws:secretsmanager:eu-west-1:123456789012:secret:coapgw/fleet-key-??????",
		"arn:aws:secretsmanager:eu-west-1:123456789012:secret:coapgw/fleet-key",
		"arn:aws:secretsmanager:*:123456789012:secret:coapgw/fleet-key-AbCdEf",
		"arn:aws:s3:::bucket/coapgw/fleet-key-AbCdEf",
	}
	secretARNAccepted = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:coapgw/fleet-key-AbCdEf"
)

// checkFleetKey: each reader's policy document (the gateway's instance role, the canary's role)
// has a statement allowing secretsmanager:GetSecretValue on var.fleet_key_secret_arn; in that
// module the variable is required and its validation rejects wildcards and partial ARNs.
func checkFleetKey(c *config, readers ...string) (violations []string) {
	mods := c.modules()
	checkedVar := map[string]bool{}
	for _, reader := range readers {
		var docs []*hclsyntax.Block
		for _, b := range c.of("data", "aws_iam_policy_document") {
			if len(b.Labels) == 2 && b.Labels[1] == reader {
				docs = append(docs, b)
			}
		}
		if len(docs) == 0 {
			violations = append(violations, fmt.Sprintf("no data.aws_iam_policy_document.%s: the %s cannot read the fleet key", reader, reader))
			continue
		}
		for _, doc := range docs {
			reads := false
			for _, st := range c.statements() {
				if strings.HasPrefix(st.where, at(doc)) && st.effect == "Allow" &&
					slices.Contains(st.actions, "secretsmanager:GetSecretValue") && slices.Equal(st.resources, []string{fleetKeyVar}) {
					reads = true
				}
			}
			if !reads {
				violations = append(violations, fmt.Sprintf("%s: no secretsmanager:GetSecretValue on var.fleet_key_secret_arn: the %s cannot read the fleet key", at(doc), reader))
			}
			dir := filepath.Dir(doc.TypeRange.Filename)
			if checkedVar[dir] {
				continue
			}
			checkedVar[dir] = true
			violations = append(violations, checkSecretARNVariable(c, mods[dir])...)
		}
	}
	return violations
}

func checkSecretARNVariable(c *config, m *module) (violations []string) {
	v, ok := m.vars["fleet_key_secret_arn"]
	if !ok {
		return []string{fmt.Sprintf("%s: no variable fleet_key_secret_arn", m.dir)}
	}
	if _, hasDefault := m.varDefault("fleet_key_secret_arn"); hasDefault {
		violations = append(violations, at(v)+": fleet_key_secret_arn has a default; it must be required")
	}
	accepts := func(arn string) bool {
		ctx := m.evalContext(map[string]cty.Value{"fleet_key_secret_arn": cty.StringVal(arn)}, c.roots())
		for _, b := range v.Body.Blocks {
			if b.Type != "validation" {
				continue
			}
			a, ok := b.Body.Attributes["condition"]
			if !ok {
				continue
			}
			r, diags := a.Expr.Value(ctx)
			if diags.HasErrors() || !r.IsKnown() || r.IsNull() || r.Type() != cty.Bool || r.False() {
				return false
			}
		}
		return true
	}
	for _, arn := range secretARNRejected {
		if accepts(arn) {
			violations = append(violations, fmt.Sprintf("%s: validation accepts %q", at(v), arn))
		}
	}
	if !accepts(secretARNAccepted) {
		violations = append(violations, fmt.Sprintf("%s: validation rejects the full ARN %q", at(v), secretARNAccepted))
	}
	return violations
}

// opening is one resource that lets UDP traffic to a port in: a security group ingress rule
// ("ingress") or an NLB listener or target group ("nlb"), with how many instances it has.
type opening struct {
	where string
	kind  string
	n     int64
}

// openings lists the resources of module m that let UDP traffic to port in when its variables
// take the defaults overridden by set. problems name the resources whose ports, protocol or
// count cannot be evaluated: they are violations too.
func (c *config) openings(m *module, set map[string]cty.Value, port int64) (out []opening, problems []string) {
	ctx := m.evalContext(set, c.roots())
	// str evaluates the first of attrs the body has, lower-cased ("" if it has none).
	str := func(body *hclsyntax.Body, attrs ...string) (string, error) {
		for _, attr := range attrs {
			if a, ok := body.Attributes[attr]; ok {
				v, diags := a.Expr.Value(ctx)
				if diags.HasErrors() {
					return "", fmt.Errorf("%s: %s", attr, diags.Error())
				}
				if !v.IsWhollyKnown() || v.IsNull() {
					return "", fmt.Errorf("%s: not known without a plan", attr)
				}
				v, err := functions["tostring"].Call([]cty.Value{v})
				if err != nil {
					return "", fmt.Errorf("%s: %w", attr, err)
				}
				return strings.ToLower(v.AsString()), nil
			}
		}
		return "", nil
	}
	// rule: does this protocol and port range (or port) let UDP to port in?
	rule := func(b *hclsyntax.Block, body *hclsyntax.Body, kind string, n int64) {
		proto, err := str(body, "ip_protocol", "protocol")
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", at(b), err))
			return
		}
		if !slices.Contains([]string{"udp", "17", "-1", "all", "tcp_udp"}, proto) {
			return
		}
		lo, hi := int64(0), int64(65535)
		attrs := [][2]string{{"from_port", "to_port"}, {"port", "port"}}
		if proto == "-1" || proto == "all" {
			attrs = nil // every port, whatever the port attributes say
		}
		for _, pair := range attrs {
			fa, fok := body.Attributes[pair[0]]
			ta, tok := body.Attributes[pair[1]]
			if !fok || !tok {
				continue
			}
			var err1, err2 error
			lo, err1 = number(fa.Expr, ctx)
			hi, err2 = number(ta.Expr, ctx)
			if err := errors.Join(err1, err2); err != nil {
				problems = append(problems, fmt.Sprintf("%s: port: %v", at(b), err))
				return
			}
			break
		}
		if lo <= port && port <= hi && n > 0 {
			out = append(out, opening{where: at(b), kind: kind, n: n})
		}
	}
	count := func(b *hclsyntax.Block) (int64, bool) {
		n, err := instances(b, ctx)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", at(b), err))
			return 0, false
		}
		return n, true
	}
	for _, b := range c.blocks {
		if b.Type != "resource" || len(b.Labels) != 2 || filepath.Dir(b.TypeRange.Filename) != m.dir {
			continue
		}
		switch b.Labels[0] {
		case "aws_vpc_security_group_ingress_rule":
			if n, ok := count(b); ok {
				rule(b, b.Body, "ingress", n)
			}
		case "aws_security_group_rule":
			if typ, err := str(b.Body, "type"); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", at(b), err))
				continue
			} else if typ != "ingress" {
				continue
			}
			if n, ok := count(b); ok {
				rule(b, b.Body, "ingress", n)
			}
		case "aws_security_group":
			n, ok := count(b)
			for _, ib := range b.Body.Blocks {
				if ib.Type == "ingress" && ok {
					rule(b, ib.Body, "ingress", n)
				}
				if ib.Type == "dynamic" && slices.Equal(ib.Labels, []string{"ingress"}) {
					problems = append(problems, at(b)+": dynamic ingress blocks cannot be checked; use aws_vpc_security_group_ingress_rule")
				}
			}
		case "aws_lb_listener", "aws_lb_target_group", "aws_alb_listener", "aws_alb_target_group":
			if n, ok := count(b); ok {
				rule(b, b.Body, "nlb", n)
			}
		}
	}
	return out, problems
}

// kinds lists the distinct kinds of openings, sorted.
func kinds(openings []opening) []string {
	var out []string
	for _, o := range openings {
		if !slices.Contains(out, o.kind) {
			out = append(out, o.kind)
		}
	}
	slices.Sort(out)
	return out
}

// checkPlainCoAP: in every module that opens anything to UDP, allow_plain_coap defaults to false;
// with it false nothing lets UDP 5683 in, in either exposure mode; with it true 5683 is open
// (security group, and the NLB with exposure = "nlb"); the DTLS port (coaps_port) is open either
// way. modules counts the modules checked, so that a test can tell a vacuous pass.
func checkPlainCoAP(c *config) (violations []string, modules int) {
	mods := c.modules()
	for _, dir := range slices.Sorted(maps.Keys(mods)) {
		m := mods[dir]
		if !hasOpeningResource(c, dir) {
			continue
		}
		modules++
		if v, ok := m.varDefault("allow_plain_coap"); !ok || !v.RawEquals(cty.False) {
			violations = append(violations, fmt.Sprintf("%s: variable allow_plain_coap must exist and default to false", dir))
		}
		coaps := int64(defaultCoAPSPort)
		if v, ok := m.varDefault("coaps_port"); ok {
			if n, err := wholeNumber(v); err == nil {
				coaps = n
			}
		}
		modes := []string{""} // a module without the exposure variable
		if _, ok := m.vars["exposure"]; ok {
			modes = []string{"eip", "nlb"}
		}
		for _, mode := range modes {
			set := func(plain bool) map[string]cty.Value {
				s := map[string]cty.Value{"allow_plain_coap": cty.BoolVal(plain)}
				if mode != "" {
					s["exposure"] = cty.StringVal(mode)
				}
				return s
			}
			label := ""
			wantKinds := []string{"ingress"}
			if mode != "" {
				label = " (exposure = " + mode + ")"
			}
			if mode == "nlb" {
				wantKinds = []string{"ingress", "nlb"}
			}
			closed, problems := c.openings(m, set(false), plainCoAPPort)
			violations = append(violations, problems...)
			for _, o := range closed {
				violations = append(violations, fmt.Sprintf("%s lets UDP %d in with allow_plain_coap = false%s (%d instances)", o.where, plainCoAPPort, label, o.n))
			}
			for _, plain := range []bool{false, true} {
				dtls, problems := c.openings(m, set(plain), coaps)
				violations = append(violations, problems...)
				if got := kinds(dtls); !slices.Equal(got, wantKinds) {
					violations = append(violations, fmt.Sprintf("%s: UDP %d (DTLS) let in by %v with allow_plain_coap = %t%s, want %v", dir, coaps, got, plain, label, wantKinds))
				}
			}
			open, problems := c.openings(m, set(true), plainCoAPPort)
			violations = append(violations, problems...)
			if got := kinds(open); !slices.Equal(got, wantKinds) {
				violations = append(violations, fmt.Sprintf("%s: UDP %d let in by %v with allow_plain_coap = true%s, want %v", dir, plainCoAPPort, got, label, wantKinds))
			}
		}
	}
	// The same unevaluable resource is reported once, not once per setting.
	slices.Sort(violations)
	return slices.Compact(violations), modules
}

func hasOpeningResource(c *config, dir string) bool {
	for _, b := range c.blocks {
		if b.Type == "resource" && len(b.Labels) == 2 && filepath.Dir(b.TypeRange.Filename) == dir &&
			(strings.Contains(b.Labels[0], "security_group") || strings.HasPrefix(b.Labels[0], "aws_lb_") || strings.HasPrefix(b.Labels[0], "aws_alb_")) {
			return true
		}
	}
	return false
}
