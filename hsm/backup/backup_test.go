package backup

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/hsm"
)

func testMBK(seed byte) []byte {
	k := make([]byte, hsm.KeySize)
	for i := range k {
		k[i] = seed + byte(i)
	}
	return k
}

func testWrap(t testing.TB, seed byte) *KeyWrap {
	t.Helper()
	kw, err := NewKeyWrap(testMBK(seed))
	if err != nil {
		t.Fatal(err)
	}
	return kw
}

func content(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

var testHeader = Header{Source: "node-a", Content: "keyquorum/test/1", Created: time.Unix(1_700_000_000, 0)}

// makeBackup encrypts data in writes of step bytes (0: one ReadFrom).
func makeBackup(t testing.TB, kw KeyWrapper, data []byte, step int) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := NewWriter(context.Background(), &out, kw, testHeader)
	if err != nil {
		t.Fatal(err)
	}
	if step == 0 {
		if _, err := w.ReadFrom(bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	} else {
		for p := data; len(p) > 0; {
			n := min(step, len(p))
			if _, err := w.Write(p[:n]); err != nil {
				t.Fatal(err)
			}
			p = p[n:]
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// open decrypts a backup with reads of step bytes (0: WriteTo) and returns what it yielded
// before the error.
func open(kw KeyWrapper, b []byte, step int) ([]byte, error) {
	r, err := NewReader(context.Background(), bytes.NewReader(b), kw)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if step == 0 {
		_, err = r.WriteTo(&out)
		return out.Bytes(), err
	}
	buf := make([]byte, step)
	for {
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
	}
}

func TestRoundTrip(t *testing.T) {
	kw := testWrap(t, 1)
	sizes := []int{0, 1, 100, ChunkSize - 1, ChunkSize, ChunkSize + 1, 2 * ChunkSize, 3*ChunkSize + 7}
	steps := []int{0, 1000, ChunkSize, ChunkSize + 1, 3 * ChunkSize}
	for _, size := range sizes {
		data := content(size, uint64(size))
		var first []byte
		for _, ws := range steps {
			if ws == 1000 && size > 2*ChunkSize {
				continue
			}
			b := makeBackup(t, kw, data, ws)
			if first == nil {
				first = b
			} else if len(b) != len(first) {
				t.Errorf("size %d: write step %d made %d bytes, another step %d", size, ws, len(b), len(first))
			}
			for _, rs := range []int{0, 7, ChunkSize, 2 * ChunkSize} {
				got, err := open(kw, b, rs)
				if err != nil {
					t.Fatalf("size %d, write step %d, read step %d: %v", size, ws, rs, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("size %d, write step %d, read step %d: content differs", size, ws, rs)
				}
			}
		}
		wantChunks := max(1, (size+ChunkSize-1)/ChunkSize)
		hdr, err := ReadHeader(bytes.NewReader(first))
		if err != nil {
			t.Fatal(err)
		}
		if got := len(first) - len(hdr.raw) - tagSize; got != wantChunks*(frameSize+tagSize)+size {
			t.Errorf("size %d: %d bytes of chunks, want %d chunks", size, got, wantChunks)
		}
	}
}

func TestHeader(t *testing.T) {
	kw := testWrap(t, 1)
	b := makeBackup(t, kw, []byte("hello"), 0)
	h, err := ReadHeader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if h.KeyID != hsm.KeyIDOf(testMBK(1)) || h.Source != "node-a" || h.Content != "keyquorum/test/1" || !h.Created.Equal(testHeader.Created) {
		t.Errorf("header read back as %+v", h)
	}
	r, err := NewReader(context.Background(), bytes.NewReader(b), kw)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Header(); got.KeyID != h.KeyID || got.Source != h.Source || got.Content != h.Content || !got.Created.Equal(h.Created) {
		t.Errorf("authenticated header %+v, want %+v", got, h)
	}

	for _, bad := range []Header{
		{Content: ""},
		{Content: "has space\x01"},
		{Content: string(bytes.Repeat([]byte("a"), 65))},
		{Content: "ok", Source: "line\nbreak"},
		{Content: "ok", Source: string(bytes.Repeat([]byte("a"), 256))},
	} {
		if _, err := NewWriter(context.Background(), io.Discard, kw, bad); err == nil {
			t.Errorf("header %q/%q accepted", bad.Source, bad.Content)
		}
	}
}

// TestDataKeyIsFresh: two backups of the same content under the same MBK share no ciphertext.
func TestDataKeyIsFresh(t *testing.T) {
	kw := testWrap(t, 1)
	data := content(2*ChunkSize, 9)
	a, b := makeBackup(t, kw, data, 0), makeBackup(t, kw, data, 0)
	ha, _ := ReadHeader(bytes.NewReader(a))
	hb, _ := ReadHeader(bytes.NewReader(b))
	if bytes.Equal(ha.wrapped, hb.wrapped) {
		t.Fatal("two backups have the same wrapped data key")
	}
	body := len(ha.raw) + tagSize + frameSize
	if bytes.Equal(a[body:body+64], b[body:body+64]) {
		t.Fatal("two backups have the same first ciphertext")
	}
}

func TestForeignKey(t *testing.T) {
	b := makeBackup(t, testWrap(t, 1), []byte("secret content"), 0)
	_, err := open(testWrap(t, 2), b, 0)
	var fe *hsm.ForeignKeyError
	if !errors.As(err, &fe) {
		t.Fatalf("opened under another MBK: %v", err)
	}
	if fe.Got != hsm.KeyIDOf(testMBK(1)) || fe.Want != hsm.KeyIDOf(testMBK(2)) {
		t.Errorf("foreign key error names %s/%s", fe.Got, fe.Want)
	}
}

// layout returns the offsets of the chunks of a backup: the header's end, then each frame's start.
func layout(t *testing.T, b []byte) (headerEnd int, frames []int) {
	t.Helper()
	h, err := ReadHeader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	off := len(h.raw) + tagSize
	headerEnd = off
	for off < len(b) {
		frames = append(frames, off)
		off += frameSize + int(binary.BigEndian.Uint32(b[off+9:off+13]))
	}
	return headerEnd, frames
}

func wantBackupErr(t *testing.T, what string, err error, want error) *hsm.BackupError {
	t.Helper()
	var be *hsm.BackupError
	if !errors.As(err, &be) || !errors.Is(err, want) {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
	return be
}

func TestTruncation(t *testing.T) {
	kw := testWrap(t, 1)
	data := content(2*ChunkSize+100, 3)
	b := makeBackup(t, kw, data, 0)
	headerEnd, frames := layout(t, b)
	cuts := []int{}
	for i := 0; i <= headerEnd+frameSize+1; i++ {
		cuts = append(cuts, i)
	}
	for _, f := range frames {
		cuts = append(cuts, f-1, f, f+1, f+frameSize-1, f+frameSize, f+frameSize+1, f+frameSize+500)
	}
	cuts = append(cuts, len(b)-16, len(b)-1)
	for _, cut := range cuts {
		if cut >= len(b) {
			continue
		}
		got, err := open(kw, b[:cut], 0)
		if cut < len(magic) {
			wantBackupErr(t, "cut inside the magic", err, hsm.ErrNotBackup)
			continue
		}
		be := wantBackupErr(t, "cut at "+strconv.Itoa(cut), err, hsm.ErrBackupTruncated)
		if cut < headerEnd && be.Chunk != -1 {
			t.Errorf("cut at %d inside the header reported at chunk %d", cut, be.Chunk)
		}
		if !bytes.HasPrefix(data, got) {
			t.Fatalf("cut at %d: reader yielded content that is not a prefix of the original", cut)
		}
	}
	// Exactly the final chunk missing: the message says so.
	_, err := open(kw, b[:frames[len(frames)-1]], 0)
	be := wantBackupErr(t, "final chunk dropped", err, hsm.ErrBackupTruncated)
	if be.Chunk != 2 {
		t.Errorf("final chunk dropped: reported at chunk %d, want 2", be.Chunk)
	}
}

func TestBitFlips(t *testing.T) {
	kw := testWrap(t, 1)
	data := content(2*ChunkSize+100, 4)
	b := makeBackup(t, kw, data, 0)
	headerEnd, frames := layout(t, b)
	var offsets []int
	for i := 0; i < headerEnd; i++ {
		offsets = append(offsets, i)
	}
	for _, f := range frames {
		for i := 0; i < frameSize+20; i++ {
			offsets = append(offsets, f+i)
		}
		offsets = append(offsets, f+frameSize+ChunkSize/2)
	}
	offsets = append(offsets, len(b)-1)
	for _, off := range offsets {
		if off >= len(b) {
			continue
		}
		for bit := 0; bit < 8; bit++ {
			c := bytes.Clone(b)
			c[off] ^= 1 << bit
			got, err := open(kw, c, 0)
			if !bytes.HasPrefix(data, got) {
				t.Fatalf("flip at %d: reader yielded altered content", off)
			}
			switch {
			case off < 4:
				wantBackupErr(t, "flip in magic", err, hsm.ErrNotBackup)
			case off == 4:
				be := wantBackupErr(t, "flip in version", err, hsm.ErrBackupVersion)
				if be.Version != int(c[4]) {
					t.Errorf("version error names %d, want %d", be.Version, c[4])
				}
			default:
				be := wantBackupErr(t, "flip at "+strconv.Itoa(off), err, hsm.ErrBackupTampered)
				if off < headerEnd && be.Chunk != -1 {
					t.Errorf("flip at %d in the header reported at chunk %d", off, be.Chunk)
				}
				for i, f := range frames {
					if off >= f && (i+1 == len(frames) || off < frames[i+1]) && be.Chunk != int64(i) {
						t.Errorf("flip at %d in chunk %d reported at chunk %d", off, i, be.Chunk)
					}
				}
			}
		}
	}
}

// reframe rebuilds a backup from its header and a list of frames.
func reframe(b []byte, headerEnd int, frames []int, order []int) []byte {
	out := bytes.Clone(b[:headerEnd])
	for _, i := range order {
		end := len(b)
		if i+1 < len(frames) {
			end = frames[i+1]
		}
		out = append(out, b[frames[i]:end]...)
	}
	return out
}

func TestReorder(t *testing.T) {
	kw := testWrap(t, 1)
	data := content(3*ChunkSize+10, 5)
	b := makeBackup(t, kw, data, 0)
	headerEnd, frames := layout(t, b)
	if len(frames) != 4 {
		t.Fatalf("%d frames", len(frames))
	}
	cases := []struct {
		name        string
		order       []int
		pos, found  int64
		wantContent int // chunks of content delivered before the error
	}{
		{"swap 1 and 2", []int{0, 2, 1, 3}, 1, 2, 1},
		{"swap 0 and 1", []int{1, 0, 2, 3}, 0, 1, 0},
		{"drop 1", []int{0, 2, 3}, 1, 2, 1},
		{"repeat 0", []int{0, 0, 1, 2, 3}, 1, 0, 1},
		{"final moved up", []int{0, 3, 1, 2}, 1, 3, 1},
		{"final first", []int{3}, 0, 3, 0},
	}
	for _, tc := range cases {
		got, err := open(kw, reframe(b, headerEnd, frames, tc.order), 0)
		be := wantBackupErr(t, tc.name, err, hsm.ErrBackupReordered)
		if be.Chunk != tc.pos || be.Found != tc.found {
			t.Errorf("%s: reported chunk %d found at %d, want %d at %d", tc.name, be.Found, be.Chunk, tc.found, tc.pos)
		}
		if !bytes.Equal(got, data[:tc.wantContent*ChunkSize]) {
			t.Errorf("%s: %d bytes delivered, want %d", tc.name, len(got), tc.wantContent*ChunkSize)
		}
	}
	// A chunk of another backup under the same MBK does not authenticate: its data key differs.
	other := makeBackup(t, kw, data, 0)
	_, oframes := layout(t, other)
	spliced := append(bytes.Clone(b[:frames[1]]), other[oframes[1]:oframes[2]]...)
	spliced = append(spliced, b[frames[2]:]...)
	_, err := open(kw, spliced, 0)
	wantBackupErr(t, "chunk of another backup", err, hsm.ErrBackupTampered)
}

func TestTrailingData(t *testing.T) {
	kw := testWrap(t, 1)
	data := content(ChunkSize+5, 6)
	b := makeBackup(t, kw, data, 0)
	for _, extra := range [][]byte{{0}, []byte("more"), bytes.Repeat([]byte{1}, 100000)} {
		got, err := open(kw, append(bytes.Clone(b), extra...), 0)
		wantBackupErr(t, "trailing data", err, hsm.ErrBackupTrailingData)
		if !bytes.Equal(got, data) {
			t.Error("content before the trailing data was not delivered whole")
		}
	}
	// Two backups concatenated: the second is trailing data.
	_, err := open(kw, append(bytes.Clone(b), b...), 7)
	wantBackupErr(t, "two backups", err, hsm.ErrBackupTrailingData)
}

// wrapOffset returns the offset of the data key wrapping byte in a header.
func wrapOffset(b []byte) int {
	src := int(b[21])
	ct := int(b[22+src])
	off := 22 + src + 1 + ct
	if b[4] >= 2 {
		off += 16 + 4
		off += 2 + int(binary.BigEndian.Uint16(b[off:off+2]))
	}
	return off
}

// resum rewrites the header checksum after an edit, as a forger would.
func resum(t *testing.T, b []byte) []byte {
	t.Helper()
	w := wrapOffset(b)
	end := w + 2 + int(b[w+1])
	sum := sha256.Sum256(b[:end])
	copy(b[end:end+8], sum[:8])
	if _, err := ReadHeader(bytes.NewReader(b)); err != nil {
		t.Fatalf("resum: %v", err)
	}
	return b
}

func TestForgedHeader(t *testing.T) {
	kw := testWrap(t, 1)
	b := makeBackup(t, kw, []byte("content"), 0)
	// A forged source name with a correct checksum: the header tag refuses it.
	c := bytes.Clone(b)
	c[22] ^= 0x01 // first byte of "node-a"
	_, err := open(kw, resum(t, c), 0)
	be := wantBackupErr(t, "forged source", err, hsm.ErrBackupTampered)
	if be.Chunk != -1 {
		t.Errorf("forged source reported at chunk %d", be.Chunk)
	}
	// A forged wrapped key: it does not unwrap.
	c = bytes.Clone(b)
	c[wrapOffset(b)+2+3] ^= 0x80
	_, err = open(kw, resum(t, c), 0)
	wantBackupErr(t, "forged wrapped key", err, hsm.ErrBackupTampered)
	// A forged key ID with a correct checksum looks like another MBK's backup.
	c = bytes.Clone(b)
	c[6] ^= 0x01
	_, err = open(kw, resum(t, c), 0)
	var fe *hsm.ForeignKeyError
	if !errors.As(err, &fe) {
		t.Errorf("forged key ID: %v", err)
	}
}

func TestNotBackup(t *testing.T) {
	kw := testWrap(t, 1)
	for _, in := range [][]byte{nil, []byte("K"), []byte("KQB"), []byte("PK\x03\x04 a zip file, not a backup at all")} {
		_, err := open(kw, in, 0)
		wantBackupErr(t, "not a backup", err, hsm.ErrNotBackup)
	}
}

func TestErrorTexts(t *testing.T) {
	kw := testWrap(t, 1)
	b := makeBackup(t, kw, content(2*ChunkSize+1, 1), 0)
	headerEnd, frames := layout(t, b)
	mbkHex := hex.EncodeToString(testMBK(1))
	for _, in := range [][]byte{b[:frames[1]+40], reframe(b, headerEnd, frames, []int{1, 0, 2}), append(bytes.Clone(b), 1)} {
		_, err := open(kw, in, 0)
		msg := err.Error()
		if msg == "" || msg[0] < 'a' || msg[0] > 'z' || bytes.Contains([]byte(msg), []byte(mbkHex)) {
			t.Errorf("error text %q", msg)
		}
	}
	_, err := open(kw, reframe(b, headerEnd, frames, []int{0, 2, 1}), 0)
	if want := "read backup: backup chunks are out of order: chunk 2 found where chunk 1 belongs"; !bytes.HasPrefix([]byte(err.Error()), []byte(want)) {
		t.Errorf("reorder text %q", err)
	}
}

func TestFrameChecksum(t *testing.T) {
	// A forged length with a correct frame checksum reads as a truncation, which is what it
	// looks like; an accidental flip is reported as damage (TestBitFlips).
	kw := testWrap(t, 1)
	b := makeBackup(t, kw, []byte("short"), 0)
	_, frames := layout(t, b)
	f := frames[0]
	binary.BigEndian.PutUint32(b[f+9:f+13], 100)
	binary.BigEndian.PutUint32(b[f+13:f+17], crc32.Checksum(b[f:f+13], castagnoli))
	_, err := open(kw, b, 0)
	wantBackupErr(t, "forged length", err, hsm.ErrBackupTruncated)
}

// TestConstantMemory: after setup, writing and reading allocate nothing per chunk.
func TestConstantMemory(t *testing.T) {
	kw := testWrap(t, 1)
	data := content(8*ChunkSize, 8)
	w, err := NewWriter(context.Background(), io.Discard, kw, testHeader)
	if err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(5, func() { w.Write(data) }); a != 0 {
		t.Errorf("writing 8 chunks allocates %v times", a)
	}
	b := makeBackup(t, kw, content(64*ChunkSize, 8), 0)
	r, err := NewReader(context.Background(), bytes.NewReader(b), kw)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, ChunkSize)
	if a := testing.AllocsPerRun(50, func() { r.Read(buf) }); a != 0 {
		t.Errorf("reading a chunk allocates %v times", a)
	}
	small := make([]byte, 1000)
	if a := testing.AllocsPerRun(500, func() { r.Read(small) }); a != 0 {
		t.Errorf("reading 1000 bytes allocates %v times", a)
	}
}

// RFC 5649 section 6 test vectors (a 192-bit KEK).
func TestKeyWrapVectors(t *testing.T) {
	kek, _ := hex.DecodeString("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")
	block, err := aes.NewCipher(kek)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []struct{ key, wrapped string }{
		{"c37b7e6492584340bed12207808941155068f738", "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
	} {
		key, _ := hex.DecodeString(v.key)
		want, _ := hex.DecodeString(v.wrapped)
		got, err := wrapPad(block, key)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("wrap %s = %x, %v; want %s", v.key, got, err, v.wrapped)
		}
		back, err := unwrapPad(block, want)
		if err != nil || !bytes.Equal(back, key) {
			t.Errorf("unwrap %s = %x, %v", v.wrapped, back, err)
		}
		for i := range want {
			c := bytes.Clone(want)
			c[i] ^= 4
			if _, err := unwrapPad(block, c); !errors.Is(err, ErrUnwrap) {
				t.Errorf("unwrap with byte %d altered: %v", i, err)
			}
		}
	}
	kw := testWrap(t, 3)
	for n := 1; n <= 70; n++ {
		key := content(n+8, uint64(n))[:n]
		w, err := kw.WrapKey(context.Background(), key)
		if err != nil || len(w) != WrappedLen(n) {
			t.Fatalf("wrap %d bytes: %d bytes, %v", n, len(w), err)
		}
		back, err := kw.UnwrapKey(context.Background(), w)
		if err != nil || !bytes.Equal(back, key) {
			t.Fatalf("unwrap %d bytes: %v", n, err)
		}
		if _, err := testWrap(t, 4).UnwrapKey(context.Background(), w); !errors.Is(err, ErrUnwrap) {
			t.Fatalf("unwrap under another key: %v", err)
		}
	}
}

// clearingWrap clears the key it is given after wrapping it, as the PKCS#11 library's
// attribute handling once made the pkcs11 backend do.
type clearingWrap struct{ *KeyWrap }

func (c clearingWrap) WrapKey(ctx context.Context, key []byte) ([]byte, error) {
	w, err := c.KeyWrap.WrapKey(ctx, key)
	clear(key)
	return w, err
}

// TestWrapperCannotClearDataKey: whatever the wrapper does with the bytes it is given, the
// stream is encrypted under the data key it wrapped, not under zeros.
func TestWrapperCannotClearDataKey(t *testing.T) {
	kw := testWrap(t, 1)
	b := makeBackup(t, clearingWrap{kw}, []byte("content"), 0)
	h, err := ReadHeader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	dk, err := kw.UnwrapKey(context.Background(), h.wrapped)
	if err != nil || bytes.Equal(dk, make([]byte, 32)) {
		t.Fatalf("data key %v, all zero: %v", err, bytes.Equal(dk, make([]byte, 32)))
	}
	if got, err := open(kw, b, 0); err != nil || string(got) != "content" {
		t.Fatalf("open: %q, %v", got, err)
	}
}

// TestLargeBackup crosses the I/O batches: buffers grow, frames straddle reads, and errors deep
// in the stream still name the right chunk and byte.
func TestLargeBackup(t *testing.T) {
	kw := testWrap(t, 1)
	const chunks = 3*batch + 5
	data := content((chunks-1)*ChunkSize+123, 11)
	var ref []byte
	for _, ws := range []int{0, 1000, 1 << 20, 3 << 20} {
		b := makeBackup(t, kw, data, ws)
		if ref == nil {
			ref = b
		} else if len(b) != len(ref) {
			t.Fatalf("write step %d: %d bytes, want %d", ws, len(b), len(ref))
		}
		for _, rs := range []int{0, 7, ChunkSize, 3 << 20} {
			got, err := open(kw, b, rs)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("write step %d, read step %d: %v (content equal: %v)", ws, rs, err, bytes.Equal(got, data))
			}
		}
	}
	headerEnd, frames := layout(t, ref)
	if len(frames) != chunks {
		t.Fatalf("%d frames, want %d", len(frames), chunks)
	}
	c := bytes.Clone(ref)
	c[frames[40]+frameSize+100] ^= 1
	be := wantBackupErr(t, "flip in chunk 40", firstErr(open(kw, c, 0)), hsm.ErrBackupTampered)
	if be.Chunk != 40 || be.Offset != int64(frames[40]) {
		t.Errorf("flip in chunk 40 reported at chunk %d byte %d, want byte %d", be.Chunk, be.Offset, frames[40])
	}
	be = wantBackupErr(t, "cut in chunk 30", firstErr(open(kw, ref[:frames[30]+5000], 7)), hsm.ErrBackupTruncated)
	if be.Chunk != 30 || be.Offset != int64(frames[30]) {
		t.Errorf("cut in chunk 30 reported at chunk %d byte %d", be.Chunk, be.Offset)
	}
	order := make([]int, chunks)
	for i := range order {
		order[i] = i
	}
	order[20], order[21] = 21, 20
	got, err := open(kw, reframe(ref, headerEnd, frames, order), 0)
	be = wantBackupErr(t, "swap 20 and 21", err, hsm.ErrBackupReordered)
	if be.Chunk != 20 || be.Found != 21 || !bytes.Equal(got, data[:20*ChunkSize]) {
		t.Errorf("swap reported chunk %d found at %d, %d bytes delivered", be.Found, be.Chunk, len(got))
	}
	be = wantBackupErr(t, "final chunk dropped", firstErr(open(kw, ref[:frames[chunks-1]], 0)), hsm.ErrBackupTruncated)
	if be.Chunk != chunks-1 {
		t.Errorf("final chunk dropped: reported at chunk %d", be.Chunk)
	}
}

func firstErr(_ []byte, err error) error { return err }
