package schemas

import (
	"embed"
	"io/fs"
	"sort"
)

//go:embed avro/*.avsc
var embeddedFS embed.FS

// UserEventSchema is the canonical user event schema
// (io.residency.events.UserEvent, schemas/avro/user_event.avsc) that producer
// teams write to the ingest topic. See docs/ingest-contract.md.
var UserEventSchema = mustEmbedded("avro/user_event.avsc")

func mustEmbedded(name string) string {
	b, err := embeddedFS.ReadFile(name)
	if err != nil {
		panic("schemas: embedded schema missing: " + name)
	}
	return string(b)
}

// Embedded returns the text of every embedded .avsc file, keyed by its file
// name ("user_event.avsc"). The embedded schemas are always known to the
// single-object framing.
func Embedded() map[string]string {
	out := map[string]string{}
	entries, _ := fs.ReadDir(embeddedFS, "avro")
	for _, e := range entries {
		out[e.Name()] = mustEmbedded("avro/" + e.Name())
	}
	return out
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
