package monitor

import (
	"encoding/base64"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"vwire.dev/sdk/pkg/tools/lru"
)

// TestViewCopiesEveryField fills every field of a connection and of its path segments, and
// checks that the copies a subscriber gets (withSegments, withoutToken) keep them all but the
// tokens: a field the API gains and the copies miss would vanish from every secure view.
func TestViewCopiesEveryField(t *testing.T) {
	seg := &networkservice.PathSegment{}
	fill(seg.ProtoReflect())
	conn := &networkservice.Connection{}
	fill(conn.ProtoReflect())
	conn.Path = &networkservice.Path{}
	fill(conn.Path.ProtoReflect())
	conn.Path.PathSegments = []*networkservice.PathSegment{seg}
	require.NotEmpty(t, seg.GetToken())

	got := withSegments(conn, []*networkservice.PathSegment{withoutToken(seg)})

	want := proto.Clone(conn).(*networkservice.Connection)
	want.GetPath().GetPathSegments()[0].Token = ""
	require.True(t, proto.Equal(want, got), "want %v\ngot  %v", want, got)
	require.NotEmpty(t, seg.GetToken(), "the record keeps its token")
}

// fill sets every scalar, enum and map field of m, and every message field to an empty message.
func fill(m protoreflect.Message) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsMap():
			m.Mutable(fd).Map().Set(protoreflect.ValueOfString("k").MapKey(), protoreflect.ValueOfString("v"))
		case fd.IsList():
			// Lists of messages (the path's segments) are filled by the test.
		case fd.Kind() == protoreflect.MessageKind:
			m.Set(fd, protoreflect.ValueOfMessage(m.NewField(fd).Message()))
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString(string(fd.Name())))
		case fd.Kind() == protoreflect.EnumKind:
			m.Set(fd, protoreflect.ValueOfEnum(1))
		case fd.Kind() == protoreflect.Uint32Kind:
			m.Set(fd, protoreflect.ValueOfUint32(1))
		default:
			panic("fill: no value for field " + string(fd.FullName()) + " of kind " + fd.Kind().String())
		}
	}
}

// TestViewCopiesOnlyToWithhold: a subscriber whose view withholds nothing gets the record
// itself; one that must not see a token gets a copy without it, and the record keeps it.
func TestViewCopiesOnlyToWithhold(t *testing.T) {
	tokenOf := func(sub string) string {
		return "e30." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"`+sub+`"}`)) + ".sig"
	}
	const a, b = "spiffe://mesh.test/a", "spiffe://mesh.test/b"
	conn := &networkservice.Connection{Id: "c", Path: &networkservice.Path{PathSegments: []*networkservice.PathSegment{
		{Name: "a", Id: "1", Token: tokenOf(a)}, {Name: "x", Id: "2"},
	}}}
	subjects := lru.New[string, string](subjectCacheSize)

	own := viewer{secure: true, id: a}.view(&record{conn: conn}, subjects)["c"]
	require.Same(t, conn, own, "nothing to withhold: the record itself")

	conn.Path.PathSegments[1].Token = tokenOf(b)
	other := viewer{secure: true, id: a}.view(&record{conn: conn}, subjects)["c"]
	require.NotSame(t, conn, other)
	require.Equal(t, tokenOf(a), other.GetPath().GetPathSegments()[0].GetToken())
	require.Empty(t, other.GetPath().GetPathSegments()[1].GetToken())
	require.Equal(t, tokenOf(b), conn.GetPath().GetPathSegments()[1].GetToken(), "the record keeps every token")
}
