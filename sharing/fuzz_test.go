package sharing

import (
	"bytes"
	"testing"
)

// FuzzUnmarshal checks that decoding never panics and that whatever decodes re-encodes to the
// same bytes: a record has exactly one encoding.
func FuzzUnmarshal(f *testing.F) {
	// The checked-in corpus under testdata/fuzz/FuzzUnmarshal holds valid records of several
	// quorums and labels; these add the edges.
	f.Add([]byte{})
	f.Add([]byte("KQSR"))
	f.Add([]byte("KQSR\x01"))
	f.Add(bytes.Repeat([]byte{0xff}, 255))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Unmarshal(b)
		if err != nil {
			if r != nil {
				t.Fatal("record returned with an error")
			}
			return
		}
		again, err := r.Marshal()
		if err != nil {
			t.Fatalf("decoded record does not marshal: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, again)
		}
		if len(b) > MaxRecordSize {
			t.Fatalf("decoded a %d-byte record, max %d", len(b), MaxRecordSize)
		}
	})
}
