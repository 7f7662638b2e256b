package backup

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"io"
	"testing"
)

// The benchmarks run in memory on 64 MiB (go test -run '^$' -bench . ./hsm/backup);
// bench/backup.sh measures 1 GiB through files, beside age, with peak memory. The Stream
// variants of raw AES-GCM read their input through an io.Reader into a buffer, as the backup
// reader must; the others seal in place, a bound nothing that reads a stream can reach.

const benchSize = 64 << 20

func benchRaw(b *testing.B, block int, seal, stream bool) {
	data := content(benchSize, 1)
	c, _ := aes.NewCipher(testMBK(1))
	aead, _ := cipher.NewGCM(c)
	nonce := make([]byte, 12)
	in := make([]byte, block+16)
	out := make([]byte, 0, block+16)
	var sealed []byte
	for i := 0; i < benchSize; i += block {
		binary.BigEndian.PutUint64(nonce[4:], uint64(i))
		sealed = aead.Seal(sealed, nonce, data[i:i+block], nil)
	}
	src := data
	if !seal {
		src = sealed
	}
	step := block
	if !seal {
		step += 16
	}
	b.SetBytes(benchSize)
	for b.Loop() {
		r := bytes.NewReader(src)
		for i := 0; i < len(src); i += step {
			chunk := src[i : i+step]
			if stream {
				io.ReadFull(r, in[:step])
				chunk = in[:step]
			}
			binary.BigEndian.PutUint64(nonce[4:], uint64(i/step*block))
			if seal {
				out = aead.Seal(out[:0], nonce, chunk, nil)
			} else if _, err := aead.Open(out[:0], nonce, chunk, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkRawSeal(b *testing.B)       { benchRaw(b, 1<<20, true, false) }
func BenchmarkRawSealStream(b *testing.B) { benchRaw(b, 1<<20, true, true) }
func BenchmarkRawOpen(b *testing.B)       { benchRaw(b, 1<<20, false, false) }
func BenchmarkRawOpenStream(b *testing.B) { benchRaw(b, 1<<20, false, true) }

func BenchmarkWrite(b *testing.B) {
	kw := testWrap(b, 1)
	data := content(benchSize, 1)
	b.SetBytes(benchSize)
	for b.Loop() {
		w, err := NewWriter(context.Background(), io.Discard, kw, testHeader)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRead(b *testing.B) {
	kw := testWrap(b, 1)
	bk := makeBackup(b, kw, content(benchSize, 1), 0)
	b.SetBytes(benchSize)
	for b.Loop() {
		r, err := NewReader(context.Background(), bytes.NewReader(bk), kw)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}
