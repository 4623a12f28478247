package wirecheck

// strayCal says at which message versions kmsg decodes a tagged field that
// Kafka's definitions do not give at those versions, with the layout of the
// field's first tagged version. It is measured, not written by hand:
// TestStrayCalibration encodes every message kmsg knows at every version
// with every field set and checks where the walk at the first version reads
// kmsg's bytes exactly; `go test ./wirecheck -run TestStrayCalibration
// -update` (run by generate.sh) writes stray_gen.go.
type strayCal struct {
	key      int16
	request  bool
	variant  int      // index into the API's variants
	path     []string // field names from the message root to the tagged field
	versions uint64   // bit v: decoded as at the first tagged version at v
}

func init() {
	for _, c := range strayCalibration {
		apis := responses
		if c.request {
			apis = requests
		}
		if c.variant >= len(apis[c.key].variants) {
			continue // TestStrayCalibration fails on a stale table
		}
		if f := fieldAt(*apis[c.key].variants[c.variant].fields, c.path); f != nil {
			f.strayAsFirst = c.versions
		}
	}
}

// fieldAt returns the field at path below fields, nil if there is none.
func fieldAt(fields []field, path []string) *field {
	for i := range fields {
		f := &fields[i]
		if f.name != path[0] {
			continue
		}
		if len(path) == 1 {
			return f
		}
		if f.members == nil {
			return nil
		}
		return fieldAt(*f.members, path[1:])
	}
	return nil
}
