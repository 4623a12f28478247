// Command gen writes wirecheck's schema table from Apache Kafka's message
// definitions: the JSON files under common/message/ of the kafka-clients
// jar (Apache License 2.0), which are the protocol's own specification.
//
//	go run ./wirecheck/internal/gen -old kafka-clients-3.9.2.jar -new kafka-clients-4.4.0.jar -out wirecheck/schema_gen.go
//
// (wirecheck/generate.sh fetches the jars from Maven Central.) -new holds
// the definitions of a current release (4.x), -old those of the last 3.x
// release: Kafka 4.0 removed old versions of many APIs, and old
// clients and old brokers still speak them. For each API key and direction
// a version is taken from -new when -new defines it, else from -old. When
// -new's fields, read at an old version, give exactly the layout -old gives
// there, the old versions are folded into -new's definition instead of
// emitting a second one.
package main

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"go/format"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

func main() {
	oldDir := flag.String("old", "", "Kafka 3.x message definitions: a kafka-clients jar or a directory of *.json")
	newDir := flag.String("new", "", "Kafka 4.x message definitions: a kafka-clients jar or a directory of *.json")
	out := flag.String("out", "", "Go file to write")
	sources := flag.String("sources", "", "what the definitions were taken from, for the generated file's header")
	flag.Parse()
	if *oldDir == "" || *newDir == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: gen -old DIR -new DIR -out FILE [-sources TEXT]")
		os.Exit(2)
	}
	if err := run(*oldDir, *newDir, *out, *sources); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

// jsonField and jsonMessage mirror the parts of Kafka's message definition
// format that decide the wire layout.
type jsonField struct {
	Name             string      `json:"name"`
	Type             string      `json:"type"`
	Versions         string      `json:"versions"`
	NullableVersions string      `json:"nullableVersions"`
	TaggedVersions   string      `json:"taggedVersions"`
	Tag              *tagNumber  `json:"tag"`
	Fields           []jsonField `json:"fields"`
}

// tagNumber is a tag, which some definitions write as a string ("0").
type tagNumber int

func (t *tagNumber) UnmarshalJSON(b []byte) error {
	n, err := strconv.Atoi(strings.Trim(string(b), `"`))
	*t = tagNumber(n)
	return err
}

type jsonStruct struct {
	Name     string      `json:"name"`
	Versions string      `json:"versions"`
	Fields   []jsonField `json:"fields"`
}

type jsonMessage struct {
	APIKey           *int16       `json:"apiKey"`
	Type             string       `json:"type"`
	Name             string       `json:"name"`
	ValidVersions    string       `json:"validVersions"`
	FlexibleVersions string       `json:"flexibleVersions"`
	Fields           []jsonField  `json:"fields"`
	CommonStructs    []jsonStruct `json:"commonStructs"`
}

type verRange struct{ lo, hi int }

const maxVersion = 32767

var noVersions = verRange{1, 0}

func (r verRange) has(v int) bool { return v >= r.lo && v <= r.hi }

func parseRange(s string) (verRange, error) {
	switch {
	case s == "" || s == "none":
		return noVersions, nil
	case strings.HasSuffix(s, "+"):
		lo, err := strconv.Atoi(strings.TrimSuffix(s, "+"))
		return verRange{lo, maxVersion}, err
	case strings.Contains(s, "-"):
		a, b, _ := strings.Cut(s, "-")
		lo, err1 := strconv.Atoi(a)
		hi, err2 := strconv.Atoi(b)
		return verRange{lo, hi}, errors.Join(err1, err2)
	default:
		v, err := strconv.Atoi(s)
		return verRange{v, v}, err
	}
}

// field is a resolved field: struct types point at their members.
type field struct {
	name     string
	kind     string // Go constant name in wirecheck: kInt32, kString, ...
	elem     string // arrays: the element's kind
	versions verRange
	nullable verRange
	tagged   verRange
	tag      int
	members  *structDef // kStruct, or an array of structs
}

type structDef struct {
	goName string // name of the generated []field variable
	fields []field
}

type message struct {
	key      int16
	request  bool
	name     string
	valid    verRange
	flexible verRange
	root     *structDef
}

var primitives = map[string]string{
	"bool": "kInt8", "int8": "kInt8", "int16": "kInt16", "uint16": "kInt16",
	"int32": "kInt32", "uint32": "kInt32", "int64": "kInt64", "float64": "kInt64",
	"uuid": "kUUID", "string": "kString", "bytes": "kBytes", "records": "kBytes",
}

var commentLine = regexp.MustCompile(`(?m)^\s*//.*$`)

// readDefinitions returns the message definition files of a directory, or
// of a kafka-clients jar (they sit under common/message/ in it).
func readDefinitions(path string) (map[string][]byte, error) {
	out := map[string][]byte{}
	if strings.HasSuffix(path, ".jar") {
		zr, err := zip.OpenReader(path)
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		for _, f := range zr.File {
			if !strings.HasPrefix(f.Name, "common/message/") || !strings.HasSuffix(f.Name, ".json") {
				continue
			}
			rc, err := f.Open()
			if err != nil {
				return nil, err
			}
			raw, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", path, f.Name, err)
			}
			out[f.Name] = raw
		}
	} else {
		files, err := filepath.Glob(filepath.Join(path, "*.json"))
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			raw, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			out[f] = raw
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no message definitions (*.json) in %s", path)
	}
	return out, nil
}

func load(path string) (map[string]*jsonMessage, error) {
	files, err := readDefinitions(path)
	if err != nil {
		return nil, err
	}
	out := map[string]*jsonMessage{}
	for f, raw := range files {
		var m jsonMessage
		if err := json.Unmarshal(commentLine.ReplaceAll(raw, nil), &m); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if m.APIKey == nil || (m.Type != "request" && m.Type != "response") {
			continue
		}
		out[fmt.Sprintf("%d/%s", *m.APIKey, m.Type)] = &m
	}
	return out, nil
}

// resolver turns one message definition into fields, naming each struct
// uniquely across the generated file.
type resolver struct {
	prefix  string
	named   map[string][]jsonField // struct type name -> members (common structs and inline definitions)
	defs    map[string]*structDef
	all     *[]*structDef
	counter map[string]int
}

func collectStructs(fields []jsonField, into map[string][]jsonField) {
	for _, f := range fields {
		if len(f.Fields) > 0 {
			into[strings.TrimPrefix(f.Type, "[]")] = f.Fields
			collectStructs(f.Fields, into)
		}
	}
}

func (r *resolver) resolve(goName string, fields []jsonField) (*structDef, error) {
	sd := &structDef{goName: goName}
	for _, jf := range fields {
		f := field{name: jf.Name, tag: -1}
		var err error
		if f.versions, err = parseRange(jf.Versions); err != nil {
			return nil, fmt.Errorf("%s.%s versions: %w", goName, jf.Name, err)
		}
		if f.nullable, err = parseRange(jf.NullableVersions); err != nil {
			return nil, fmt.Errorf("%s.%s nullableVersions: %w", goName, jf.Name, err)
		}
		if f.tagged, err = parseRange(jf.TaggedVersions); err != nil {
			return nil, fmt.Errorf("%s.%s taggedVersions: %w", goName, jf.Name, err)
		}
		if jf.Tag != nil {
			f.tag = int(*jf.Tag)
		}
		typ := jf.Type
		isArray := strings.HasPrefix(typ, "[]")
		typ = strings.TrimPrefix(typ, "[]")
		kind, primitive := primitives[typ]
		if !primitive {
			members, ok := r.named[typ]
			if len(jf.Fields) > 0 {
				members, ok = jf.Fields, true
			}
			if !ok {
				return nil, fmt.Errorf("%s.%s: unknown type %q", goName, jf.Name, jf.Type)
			}
			sub, err := r.structFor(typ, members)
			if err != nil {
				return nil, err
			}
			f.members, kind = sub, "kStruct"
		}
		if isArray {
			f.kind, f.elem = "kArray", kind
		} else {
			f.kind = kind
		}
		sd.fields = append(sd.fields, f)
	}
	return sd, nil
}

func (r *resolver) structFor(typ string, members []jsonField) (*structDef, error) {
	if sd, ok := r.defs[typ]; ok {
		return sd, nil
	}
	name := r.prefix + typ
	if n := r.counter[name]; n > 0 {
		name += strconv.Itoa(n)
	}
	r.counter[name]++
	sd, err := r.resolve(name, members)
	if err != nil {
		return nil, err
	}
	r.defs[typ] = sd
	*r.all = append(*r.all, sd)
	return sd, nil
}

func build(m *jsonMessage, tag string, all *[]*structDef, counter map[string]int) (*message, error) {
	valid, err := parseRange(m.ValidVersions)
	if err != nil {
		return nil, fmt.Errorf("%s validVersions: %w", m.Name, err)
	}
	flex, err := parseRange(m.FlexibleVersions)
	if err != nil {
		return nil, fmt.Errorf("%s flexibleVersions: %w", m.Name, err)
	}
	named := map[string][]jsonField{}
	for _, cs := range m.CommonStructs {
		named[cs.Name] = cs.Fields
		collectStructs(cs.Fields, named)
	}
	collectStructs(m.Fields, named)
	r := &resolver{prefix: lowerFirst(m.Name) + tag, named: named, defs: map[string]*structDef{}, all: all, counter: counter}
	root, err := r.resolve(lowerFirst(m.Name)+tag, m.Fields)
	if err != nil {
		return nil, err
	}
	*all = append(*all, root)
	return &message{key: *m.APIKey, request: m.Type == "request", name: strings.TrimSuffix(strings.TrimSuffix(m.Name, "Request"), "Response"),
		valid: valid, flexible: flex, root: root}, nil
}

func lowerFirst(s string) string { return strings.ToLower(s[:1]) + s[1:] }

// layout renders what a message looks like on the wire at version v, to
// compare two definitions.
func layout(fields []field, v int, flexible bool) string {
	var b strings.Builder
	for _, f := range fields {
		if !f.versions.has(v) {
			continue
		}
		fmt.Fprintf(&b, "%s/%s/n%v", f.kind, f.elem, f.nullable.has(v))
		if flexible && f.tagged.has(v) {
			fmt.Fprintf(&b, "/t%d", f.tag)
		}
		if f.members != nil {
			b.WriteString("{" + layout(f.members.fields, v, flexible) + "}")
		}
		b.WriteString(";")
	}
	return b.String()
}

// variant is one generated definition of a message, used for a range of
// versions.
type variant struct {
	versions verRange
	msg      *message
}

func run(oldDir, newDir, out, sources string) error {
	olds, err := load(oldDir)
	if err != nil {
		return err
	}
	news, err := load(newDir)
	if err != nil {
		return err
	}
	keys := map[string]bool{}
	for k := range olds {
		keys[k] = true
	}
	for k := range news {
		keys[k] = true
	}
	var ordered []string
	for k := range keys {
		ordered = append(ordered, k)
	}
	sort.Slice(ordered, func(i, j int) bool {
		ki, _ := strconv.Atoi(strings.Split(ordered[i], "/")[0])
		kj, _ := strconv.Atoi(strings.Split(ordered[j], "/")[0])
		if ki != kj {
			return ki < kj
		}
		return ordered[i] < ordered[j]
	})

	var all []*structDef
	counter := map[string]int{}
	type entry struct {
		key      int16
		request  bool
		name     string
		variants []variant
	}
	var entries []entry
	for _, k := range ordered {
		var nm, om *message
		if m := news[k]; m != nil {
			if nm, err = build(m, "", &all, counter); err != nil {
				return err
			}
		}
		if m := olds[k]; m != nil {
			var scratch []*structDef
			if om, err = build(m, "V3", &scratch, counter); err != nil {
				return err
			}
			// Versions only the old definition has: fold into the new
			// definition where it reads them identically.
			var oldOnly []int
			for v := om.valid.lo; v <= om.valid.hi && om.valid.lo <= om.valid.hi; v++ {
				if nm == nil || !nm.valid.has(v) {
					oldOnly = append(oldOnly, v)
				}
			}
			same := nm != nil && nm.valid.lo <= nm.valid.hi
			for _, v := range oldOnly {
				if !same {
					break
				}
				same = nm.flexible.has(v) == om.flexible.has(v) &&
					layout(nm.root.fields, v, nm.flexible.has(v)) == layout(om.root.fields, v, om.flexible.has(v))
			}
			switch {
			case len(oldOnly) == 0:
				om = nil
			case same:
				// The old versions sit below the new range (Kafka 4 removed
				// the oldest versions), so the new definition's range grows
				// down to cover them.
				if oldOnly[len(oldOnly)-1] != nm.valid.lo-1 {
					return fmt.Errorf("%s: old-only versions %v are not contiguous below %d", k, oldOnly, nm.valid.lo)
				}
				nm.valid.lo = oldOnly[0]
				om = nil
			default:
				om.valid = verRange{oldOnly[0], oldOnly[len(oldOnly)-1]}
				if len(oldOnly) != om.valid.hi-om.valid.lo+1 {
					return fmt.Errorf("%s: old-only versions %v are not contiguous", k, oldOnly)
				}
				all = append(all, scratch...)
			}
		}
		e := entry{}
		for _, m := range []*message{nm, om} {
			if m == nil || m.valid.lo > m.valid.hi {
				continue
			}
			e.key, e.request, e.name = m.key, m.request, m.name
			e.variants = append(e.variants, variant{m.valid, m})
		}
		if len(e.variants) > 0 {
			entries = append(entries, e)
		}
	}

	var b bytes.Buffer
	fmt.Fprintf(&b, "// Code generated by wirecheck/internal/gen from Apache Kafka's message definitions")
	if sources != "" {
		fmt.Fprintf(&b, " (%s)", sources)
	}
	b.WriteString(". DO NOT EDIT.\n\npackage wirecheck\n\n")
	rng := func(r verRange) string {
		if r.lo > r.hi {
			return "none"
		}
		return fmt.Sprintf("verRange{%d, %d}", r.lo, r.hi)
	}
	b.WriteString("var (\n")
	for _, sd := range all {
		fmt.Fprintf(&b, "\t%s = []field{\n", sd.goName)
		for _, f := range sd.fields {
			fmt.Fprintf(&b, "\t\t{name: %q, kind: %s", f.name, f.kind)
			if f.elem != "" {
				fmt.Fprintf(&b, ", elem: %s", f.elem)
			}
			fmt.Fprintf(&b, ", versions: %s", rng(f.versions))
			if f.nullable.lo <= f.nullable.hi {
				fmt.Fprintf(&b, ", nullable: %s", rng(f.nullable))
			} else {
				b.WriteString(", nullable: none")
			}
			if f.tagged.lo <= f.tagged.hi {
				fmt.Fprintf(&b, ", tagged: %s, tag: %d", rng(f.tagged), f.tag)
			} else {
				b.WriteString(", tagged: none")
			}
			if f.members != nil {
				fmt.Fprintf(&b, ", members: &%s", f.members.goName)
			}
			b.WriteString("},\n")
		}
		b.WriteString("\t}\n")
	}
	b.WriteString(")\n\n")
	for _, dir := range []bool{true, false} {
		if dir {
			b.WriteString("var requests = map[int16]api{\n")
		} else {
			b.WriteString("var responses = map[int16]api{\n")
		}
		for _, e := range entries {
			if e.request != dir {
				continue
			}
			fmt.Fprintf(&b, "\t%d: {name: %q, variants: []variant{", e.key, e.name)
			for _, v := range e.variants {
				fmt.Fprintf(&b, "{versions: %s, flexible: %s, fields: &%s}, ", rng(v.versions), rng(v.msg.flexible), v.msg.root.goName)
			}
			b.WriteString("}},\n")
		}
		b.WriteString("}\n\n")
	}
	src, err := format.Source(b.Bytes())
	if err != nil {
		return fmt.Errorf("format generated code: %w", err)
	}
	return os.WriteFile(out, src, 0o644)
}
