// Package layoutcheck holds no code: its tests keep the shape of the code base that a newcomer
// relies on. Every package has one package doc comment; no non-test Go file under internal/ is
// longer than 600 lines; the gateway binary (cmd/coapgw) links neither the load generator nor the
// test helpers. Each check runs over the real tree and over a small broken fixture it must
// reject, so the checks are shown to be able to fail.
package layoutcheck
