package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/messages"
)

// A field left out of the YAML and one written as 0 decode to the same Go
// value; the defaults must tell them apart, so that a 0 a person wrote is
// never replaced by a default. Parse records which fields the YAML wrote
// (writtenFields): validation refuses a written 0 that a default would
// replace, and the fields where 0 means something (retry.budget,
// retry.budget_min_per_second, a tier's min_share) remember that it was
// written, so that it holds through Validate and Marshal. A configuration
// built in Go keeps its zero fields meaning their defaults.

// maxWrittenDepth bounds how deep writtenFields looks: the deepest field of
// the configuration is pools.<pool>.deployments[i].windows[j].
const maxWrittenDepth = 8

// maxWrittenNodes bounds the nodes writtenFields visits, whatever aliases
// a document holds.
const maxWrittenNodes = 1 << 20

// writtenFields returns the paths, as validation names them (such as
// pools.gpt-4o-mini.deployments[0].weight), of the fields data sets. A
// field set to null counts as left out. Merge keys (<<) set the fields
// they bring in.
func writtenFields(data []byte) map[string]bool {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil
	}
	w := &writtenWalk{fields: map[string]bool{}}
	w.walk(&doc, "", 0)
	return w.fields
}

type writtenWalk struct {
	fields map[string]bool
	nodes  int
}

func (w *writtenWalk) walk(n *yaml.Node, path string, depth int) {
	n = resolveAlias(n)
	w.nodes++
	if n == nil || depth > maxWrittenDepth || w.nodes > maxWrittenNodes {
		return
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			w.walk(c, path, depth)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], resolveAlias(n.Content[i+1])
			if v == nil {
				continue
			}
			if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
				if v.Kind == yaml.SequenceNode {
					for _, m := range v.Content {
						w.walk(m, path, depth+1)
					}
				} else {
					w.walk(v, path, depth+1)
				}
				continue
			}
			if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
				continue
			}
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			w.fields[p] = true
			w.walk(v, p, depth+1)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			w.walk(c, fmt.Sprintf("%s[%d]", path, i), depth+1)
		}
	}
}

// resolveAlias follows an alias to the node it names.
func resolveAlias(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 8; i++ {
		n = n.Alias
	}
	return n
}

// noteWritten marks the fields where a 0 holds, when the YAML wrote a 0
// for them. (Only a 0: so that configurations that read the same compare
// equal, however their YAML was written.)
func (c *Config) noteWritten(written map[string]bool) {
	c.Retry.budgetWritten = written["retry.budget"] && c.Retry.Budget == 0
	c.Retry.budgetMinWritten = written["retry.budget_min_per_second"] && c.Retry.BudgetMinPerSecond == 0
	for _, tier := range messages.Tiers {
		p := c.Tiers.Policy(tier)
		p.minShareWritten = written["tiers."+string(tier)+".min_share"] && p.MinShare == 0
	}
}

// MarshalYAML leaves out the fields that are 0 for their default, and
// keeps a 0 that was written: Parse reads back the same retry settings.
func (r Retry) MarshalYAML() (any, error) {
	type plain Retry
	var held []string
	if r.budgetWritten && r.Budget == 0 {
		held = append(held, "budget")
	}
	if r.budgetMinWritten && r.BudgetMinPerSecond == 0 {
		held = append(held, "budget_min_per_second")
	}
	return encodeHolding(plain(r), held...)
}

// MarshalYAML leaves out a min_share that is 0 for its default, and keeps
// one that was written.
func (p TierPolicy) MarshalYAML() (any, error) {
	type plain TierPolicy
	var held []string
	if p.minShareWritten && p.MinShare == 0 {
		held = append(held, "min_share")
	}
	return encodeHolding(plain(p), held...)
}

// encodeHolding encodes v, a struct, as a YAML mapping, and adds the keys
// named in held, with the value 0, where v's fields put them: the zero
// fields omitempty left out that must hold.
func encodeHolding(v any, held ...string) (*yaml.Node, error) {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return nil, err
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = *n.Content[0]
	}
	if len(held) == 0 {
		return &n, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config: %T does not encode as a mapping", v)
	}
	order := yamlNames(reflect.TypeOf(v))
	for _, key := range held {
		rank := slices.Index(order, key)
		at := len(n.Content)
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				at = -1
				break
			}
			if slices.Index(order, n.Content[i].Value) > rank && at == len(n.Content) {
				at = i
			}
		}
		if at < 0 {
			continue
		}
		n.Content = slices.Insert(n.Content, at,
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key},
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: "0"})
	}
	return &n, nil
}

// yamlNames lists the YAML names of a struct's fields, in their order.
func yamlNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.IsExported() && name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// knownFieldsOnly refuses, as the strict decoder does, a key of the
// mappings in the mapping n that names no field of t: a node decoded by an
// UnmarshalYAML method is not checked for unknown fields by yaml.
func knownFieldsOnly(n *yaml.Node, t reflect.Type) error {
	n = resolveAlias(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	known := yamlNames(t)
	for i := 1; i < len(n.Content); i += 2 {
		m := resolveAlias(n.Content[i])
		if m == nil || m.Kind != yaml.MappingNode {
			continue
		}
		for j := 0; j+1 < len(m.Content); j += 2 {
			k := m.Content[j]
			if k.Value == "<<" && k.ShortTag() == "!!merge" {
				continue
			}
			if !slices.Contains(known, k.Value) {
				return fmt.Errorf("yaml: unmarshal errors:\n  line %d: field %s not found in type %s", k.Line, k.Value, t)
			}
		}
	}
	return nil
}
