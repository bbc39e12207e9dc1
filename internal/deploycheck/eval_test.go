package deploycheck

import (
	"fmt"
	"maps"
	"math/big"
	"path/filepath"
	"slices"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// A small evaluator for the parts of a module that decide what is exposed: variables (their
// defaults, or values a check sets), locals computed from them, and the count, for_each and port
// expressions of resources. Anything that depends on a data source or another resource is
// unknown, and a check treats an unknown it needs as a failure: what cannot be shown safe is not.

// functions are the Terraform functions the evaluated expressions use; an unknown function is an
// evaluation error, so the value stays unknown.
var functions = map[string]function.Function{
	"alltrue":    alltrueFunc,
	"can":        tryfunc.CanFunc,
	"concat":     stdlib.ConcatFunc,
	"contains":   stdlib.ContainsFunc,
	"endswith":   endswithFunc,
	"floor":      stdlib.FloorFunc,
	"join":       stdlib.JoinFunc,
	"keys":       stdlib.KeysFunc,
	"length":     stdlib.LengthFunc,
	"max":        stdlib.MaxFunc,
	"merge":      stdlib.MergeFunc,
	"min":        stdlib.MinFunc,
	"regex":      stdlib.RegexFunc,
	"startswith": startswithFunc,
	"tolist":     stdlib.MakeToFunc(cty.List(cty.DynamicPseudoType)),
	"tonumber":   stdlib.MakeToFunc(cty.Number),
	"toset":      stdlib.MakeToFunc(cty.Set(cty.DynamicPseudoType)),
	"tostring":   stdlib.MakeToFunc(cty.String),
}

var alltrueFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "list", Type: cty.List(cty.Bool)}},
	Type:   function.StaticReturnType(cty.Bool),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		out := cty.True
		for it := args[0].ElementIterator(); it.Next(); {
			_, v := it.Element()
			if !v.IsKnown() {
				return cty.UnknownVal(cty.Bool), nil
			}
			if v.IsNull() || v.False() {
				out = cty.False
			}
		}
		return out, nil
	},
})

func affixFunc(match func(s, affix string) bool) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "str", Type: cty.String}, {Name: "affix", Type: cty.String}},
		Type:   function.StaticReturnType(cty.Bool),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.BoolVal(match(args[0].AsString(), args[1].AsString())), nil
		},
	})
}

var (
	startswithFunc = affixFunc(func(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p })
	endswithFunc   = affixFunc(func(s, p string) bool { return len(s) >= len(p) && s[len(s)-len(p):] == p })
)

// module is the variables and locals of one directory of .tf files (one Terraform module).
type module struct {
	dir    string
	vars   map[string]*hclsyntax.Block
	locals map[string]hclsyntax.Expression
}

// modules groups the variable and locals blocks by directory.
func (c *config) modules() map[string]*module {
	out := map[string]*module{}
	get := func(b *hclsyntax.Block) *module {
		dir := filepath.Dir(b.TypeRange.Filename)
		if out[dir] == nil {
			out[dir] = &module{dir: dir, vars: map[string]*hclsyntax.Block{}, locals: map[string]hclsyntax.Expression{}}
		}
		return out[dir]
	}
	for _, b := range c.blocks {
		switch {
		case b.Type == "variable" && len(b.Labels) == 1:
			get(b).vars[b.Labels[0]] = b
		case b.Type == "locals":
			m := get(b)
			for name, a := range b.Body.Attributes {
				m.locals[name] = a.Expr
			}
		default:
			get(b)
		}
	}
	return out
}

// varDefault is a variable's default value; ok is false for a required variable.
func (m *module) varDefault(name string) (v cty.Value, ok bool) {
	b, found := m.vars[name]
	if !found {
		return cty.NilVal, false
	}
	a, found := b.Body.Attributes["default"]
	if !found {
		return cty.NilVal, false
	}
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		return cty.NilVal, false
	}
	return v, true
}

// evalContext: var.* from the defaults and the given values (a required variable not given is
// unknown), local.* computed from them, every other root (data, resources, path, count, each)
// unknown.
func (m *module) evalContext(set map[string]cty.Value, otherRoots []string) *hcl.EvalContext {
	vars := map[string]cty.Value{}
	for name := range m.vars {
		if v, ok := set[name]; ok {
			vars[name] = v
		} else if v, ok := m.varDefault(name); ok {
			vars[name] = v
		} else {
			vars[name] = cty.DynamicVal
		}
	}
	ctx := &hcl.EvalContext{Functions: functions, Variables: map[string]cty.Value{
		"var": cty.ObjectVal(vars),
	}}
	for _, root := range otherRoots {
		ctx.Variables[root] = cty.DynamicVal
	}
	// Locals may refer to each other: compute them in passes until nothing changes; whatever
	// cannot be computed stays unknown.
	locals := map[string]cty.Value{}
	for name := range m.locals {
		locals[name] = cty.DynamicVal
	}
	for range len(m.locals) + 1 {
		ctx.Variables["local"] = cty.ObjectVal(locals)
		changed := false
		for _, name := range slices.Sorted(maps.Keys(m.locals)) {
			if locals[name].IsWhollyKnown() {
				continue
			}
			v, diags := m.locals[name].Value(ctx)
			if !diags.HasErrors() && v.IsWhollyKnown() {
				locals[name] = v
				changed = true
			}
		}
		if !changed {
			break
		}
	}
	ctx.Variables["local"] = cty.ObjectVal(locals)
	return ctx
}

// roots are the names an expression may start with besides var and local.
func (c *config) roots() []string {
	roots := []string{"data", "path", "count", "each", "module", "terraform", "self"}
	for _, b := range c.blocks {
		if b.Type == "resource" && len(b.Labels) > 0 && !slices.Contains(roots, b.Labels[0]) {
			roots = append(roots, b.Labels[0])
		}
	}
	return roots
}

// number evaluates an expression that must be a known whole number.
func number(e hclsyntax.Expression, ctx *hcl.EvalContext) (int64, error) {
	v, diags := e.Value(ctx)
	if diags.HasErrors() {
		return 0, fmt.Errorf("%s", diags.Error())
	}
	if !v.IsWhollyKnown() || v.IsNull() {
		return 0, fmt.Errorf("not known without a plan")
	}
	return wholeNumber(v)
}

// wholeNumber converts a known value (a number or a numeric string) to an int64.
func wholeNumber(v cty.Value) (int64, error) {
	v, err := convert.Convert(v, cty.Number)
	if err != nil {
		return 0, err
	}
	n, acc := v.AsBigFloat().Int64()
	if acc != big.Exact {
		return 0, fmt.Errorf("%s is not a whole number", v.AsBigFloat())
	}
	return n, nil
}

// instances is how many instances a resource block has: its count, the length of its for_each,
// or 1.
func instances(b *hclsyntax.Block, ctx *hcl.EvalContext) (int64, error) {
	if a, ok := b.Body.Attributes["count"]; ok {
		n, err := number(a.Expr, ctx)
		if err != nil {
			return 0, fmt.Errorf("count: %w", err)
		}
		return n, nil
	}
	if a, ok := b.Body.Attributes["for_each"]; ok {
		v, diags := a.Expr.Value(ctx)
		if diags.HasErrors() {
			return 0, fmt.Errorf("for_each: %s", diags.Error())
		}
		if !v.IsKnown() || v.IsNull() || !v.CanIterateElements() {
			return 0, fmt.Errorf("for_each: not known without a plan")
		}
		return int64(v.LengthInt()), nil
	}
	return 1, nil
}
