package trace

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Diff describes how after differs from before as sorted lines `path: old -> new`, one per
// changed scalar; "" when they are equal. It is meant for people reading logs, not for machines.
func Diff(before, after proto.Message) string {
	if proto.Equal(before, after) {
		return ""
	}
	old, cur := map[string]string{}, map[string]string{}
	flatten("", before.ProtoReflect(), old)
	flatten("", after.ProtoReflect(), cur)
	var lines []string
	for k, v := range cur {
		if o, ok := old[k]; !ok {
			lines = append(lines, fmt.Sprintf("%s: + %s", k, v))
		} else if o != v {
			lines = append(lines, fmt.Sprintf("%s: %s -> %s", k, o, v))
		}
	}
	for k, o := range old {
		if _, ok := cur[k]; !ok {
			lines = append(lines, fmt.Sprintf("%s: - %s", k, o))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func flatten(prefix string, m protoreflect.Message, out map[string]string) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		path := string(fd.Name())
		if prefix != "" {
			path = prefix + "." + path
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				flattenValue(fmt.Sprintf("%s[%d]", path, i), fd, l.Get(i), out)
			}
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				flattenValue(fmt.Sprintf("%s[%q]", path, k.String()), fd.MapValue(), mv, out)
				return true
			})
		default:
			flattenValue(path, fd, v, out)
		}
		return true
	})
}

func flattenValue(path string, fd protoreflect.FieldDescriptor, v protoreflect.Value, out map[string]string) {
	if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
		flatten(path, v.Message(), out)
		return
	}
	if fd.Kind() == protoreflect.EnumKind {
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			out[path] = string(ev.Name())
			return
		}
	}
	out[path] = fmt.Sprintf("%q", v.String())
}
