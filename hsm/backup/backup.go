// Package backup is the Master Backup Key encrypted backup format: what every HSM backend writes
// when its key database leaves the HSM, and reads when it comes back.
//
// # Use
//
// [NewWriter] writes the header and returns an io.WriteCloser for the content; [Writer.Close]
// writes the final chunk (it does not close the underlying writer). [NewReader] reads the
// header, refuses a backup made under another MBK with a [*hsm.ForeignKeyError] and returns an
// io.Reader of the content that yields only authenticated bytes and returns io.EOF only after
// the final chunk authenticated and nothing followed it. [ReadHeader] shows a header without
// any key. Both directions hold one chunk in memory, whatever the size of the backup.
//
// What a backend puts inside is its own business, named by the header's content type; the key
// records of [WriteRecord] and [RecordReader] are what both backends use.
//
// # Format, version 1
//
// A header, then chunks. All integers are big-endian.
//
//	header
//	offset  size  field
//	0       4     magic "KQBK"
//	4       1     version (1)
//	5       8     key ID of the MBK
//	13      8     creation time, Unix seconds
//	21      1     source node length S (0..255)
//	22      S     source node, UTF-8 without control characters
//	22+S    1     content type length C (1..64)
//	23+S    C     content type, printable ASCII, e.g. "keyquorum/soft-keys/1"
//	23+S+C  1     data key wrapping: 1 = AES Key Wrap with Padding (RFC 5649) under the MBK
//	24+S+C  1     wrapped data key length W (40)
//	25+S+C  W     the 32-byte data key, wrapped
//	..      8     checksum: the first 8 bytes of SHA-256 over the header so far
//	..      16    header tag: AES-256-GCM under the data key, nonce(0, header), empty plaintext,
//	              the header so far (checksum included) as additional data
//
//	chunk i (i = 0, 1, ...)
//	0       8     chunk number i
//	8       1     flag: 0 = more chunks follow, 1 = final chunk
//	9       4     ciphertext length L: 65552 (64 KiB + tag) unless final; 16..65552 if final
//	13      4     CRC-32C of the 13 bytes before it
//	17      L     AES-256-GCM under the data key, nonce(i, flag), of 64 KiB of content
//	              (the final chunk: the rest, 0..64 KiB, empty only if the backup is)
//
// The 12-byte nonce is 3 zero bytes, the 8-byte chunk number and a byte that is 0 for a
// chunk, 1 for the final chunk and 2 for the header tag. Each backup has its own random data
// key, so a nonce never repeats under a key. Because the number and the final flag are in the
// nonce, a chunk authenticates only at its own place with its own flag: a chunk that
// authenticates under a number other than its position was moved, dropped or repeated
// ([hsm.ErrBackupReordered]); one that does not authenticate was altered
// ([hsm.ErrBackupTampered]); a stream that ends before a final chunk was cut
// ([hsm.ErrBackupTruncated]); bytes after the final chunk are [hsm.ErrBackupTrailingData].
// The checksums tell accidental damage from other conditions: a damaged header from a backup of
// another MBK before any key is used, a damaged chunk length from a truncated file. They are no
// protection against forgery; the header tag and the chunk tags are.
//
// # What this package must never do
//
// Release content bytes that have not been authenticated, hold more than a chunk, or keep the
// data key after the AEAD is set up. It knows nothing of bbolt, tokens or cards.
package backup

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keyquorum/keyquorum/hsm"
)

const (
	// ChunkSize is the content carried by every chunk but the last.
	ChunkSize = 64 << 10
	// Version is the format version this package writes and reads.
	Version = 1

	magic          = "KQBK"
	dataKeySize    = 32
	tagSize        = 16
	frameSize      = 17 // chunk number, flag, length, CRC-32C
	checksumSize   = 8
	wrapKWP        = 1
	maxContentType = 64
	maxSource      = 255

	flagMore   = 0
	flagFinal  = 1
	flagHeader = 2
)

// Header describes a backup. Everything in it is authenticated by the header tag once the
// backup is opened with [NewReader]; [ReadHeader] only checks the checksum.
type Header struct {
	KeyID   hsm.KeyID // the MBK the backup was made under
	Created time.Time // whole seconds
	Source  string    // the node that made it
	Content string    // what the content is, e.g. "keyquorum/soft-keys/1"

	wrapped []byte // the data key wrapped under the MBK
	raw     []byte // the encoded header up to the tag, as read or written
	tag     []byte
}

func validText(s string, max int, ascii bool) bool {
	if len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) || (ascii && (r < 0x20 || r > 0x7e)) {
			return false
		}
	}
	return true
}

func (h *Header) validate() error {
	if !validText(h.Source, maxSource, false) {
		return errors.New("source node must be at most 255 bytes of UTF-8 without control characters")
	}
	if h.Content == "" || !validText(h.Content, maxContentType, true) {
		return errors.New("content type must be 1 to 64 printable ASCII characters")
	}
	return nil
}

// marshal encodes the header up to and including the checksum.
func (h *Header) marshal() []byte {
	b := make([]byte, 0, 64+len(h.Source)+len(h.Content)+len(h.wrapped))
	b = append(b, magic...)
	b = append(b, Version)
	b = append(b, h.KeyID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(h.Created.Unix()))
	b = append(b, byte(len(h.Source)))
	b = append(b, h.Source...)
	b = append(b, byte(len(h.Content)))
	b = append(b, h.Content...)
	b = append(b, wrapKWP, byte(len(h.wrapped)))
	b = append(b, h.wrapped...)
	sum := sha256.Sum256(b)
	return append(b, sum[:checksumSize]...)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func nonce(n *[12]byte, chunk uint64, flag byte) {
	n[0], n[1], n[2] = 0, 0, 0
	binary.BigEndian.PutUint64(n[3:11], chunk)
	n[11] = flag
}

func newAEAD(dataKey []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(dataKey)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Writer encrypts content into a backup. It is not safe for concurrent use.
type Writer struct {
	w     io.Writer
	aead  cipher.AEAD
	buf   []byte // frame header, then content (pending n bytes) or ciphertext
	n     int    // pending content bytes in buf[frameSize:]
	chunk uint64
	nonce [12]byte // here, not on the stack: passed to an interface method it would escape
	err   error
}

// NewWriter writes the header of a new backup to w and returns the writer for its content.
// h names the source and the content type; its KeyID and Created are set by NewWriter (the MBK
// of kw, the current time unless h.Created is set).
func NewWriter(ctx context.Context, w io.Writer, kw KeyWrapper, h Header) (*Writer, error) {
	if err := h.validate(); err != nil {
		return nil, fmt.Errorf("write backup: %w", err)
	}
	h.KeyID = kw.KeyID()
	if h.Created.IsZero() {
		h.Created = time.Now()
	}
	h.Created = h.Created.Truncate(time.Second)
	dataKey := make([]byte, dataKeySize)
	defer hsm.Zero(dataKey)
	if _, err := rand.Read(dataKey); err != nil {
		return nil, fmt.Errorf("write backup: %w", err)
	}
	keyCopy := bytes.Clone(dataKey) // the wrapper may keep or clear what it is given
	wrapped, err := kw.WrapKey(ctx, keyCopy)
	hsm.Zero(keyCopy)
	if err != nil {
		return nil, fmt.Errorf("write backup: wrap data key: %w", err)
	}
	if len(wrapped) > 255 {
		return nil, fmt.Errorf("write backup: wrapped data key of %d bytes", len(wrapped))
	}
	h.wrapped = wrapped
	aead, err := newAEAD(dataKey)
	if err != nil {
		return nil, fmt.Errorf("write backup: %w", err)
	}
	raw := h.marshal()
	var nc [12]byte
	nonce(&nc, 0, flagHeader)
	out := aead.Seal(raw, nc[:], nil, raw)
	if _, err := w.Write(out); err != nil {
		return nil, fmt.Errorf("write backup: %w", err)
	}
	return &Writer{w: w, aead: aead, buf: make([]byte, frameSize+ChunkSize+tagSize)}, nil
}

// seal encrypts content (which is buf[frameSize:frameSize+len] or a caller's slice of at most
// ChunkSize) as the next chunk and writes the frame.
func (w *Writer) seal(content []byte, final bool) error {
	flag := byte(flagMore)
	if final {
		flag = flagFinal
	}
	nonce(&w.nonce, w.chunk, flag)
	ct := w.aead.Seal(w.buf[frameSize:frameSize], w.nonce[:], content, nil)
	binary.BigEndian.PutUint64(w.buf[0:8], w.chunk)
	w.buf[8] = flag
	binary.BigEndian.PutUint32(w.buf[9:13], uint32(len(ct)))
	binary.BigEndian.PutUint32(w.buf[13:17], crc32.Checksum(w.buf[:13], castagnoli))
	if _, err := w.w.Write(w.buf[:frameSize+len(ct)]); err != nil {
		w.err = fmt.Errorf("write backup: %w", err)
		return w.err
	}
	w.chunk++
	return nil
}

// Write encrypts p. A chunk is written once it is full and more content follows it.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		if w.n == ChunkSize {
			if err := w.seal(w.buf[frameSize:frameSize+ChunkSize], false); err != nil {
				return written, err
			}
			w.n = 0
		}
		if w.n == 0 && len(p) > ChunkSize {
			// A whole chunk with content after it: seal straight from p, no copy.
			if err := w.seal(p[:ChunkSize], false); err != nil {
				return written, err
			}
			p, written = p[ChunkSize:], written+ChunkSize
			continue
		}
		c := copy(w.buf[frameSize+w.n:frameSize+ChunkSize], p)
		w.n += c
		p, written = p[c:], written+c
	}
	return written, nil
}

// ReadFrom encrypts everything r yields, reading straight into the chunk buffer. It reads one
// byte past each chunk to learn whether the chunk is the final one.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	var total int64
	for {
		// The plaintext area has room for ChunkSize+1 bytes (the tag space behind it is 16).
		n, err := io.ReadFull(r, w.buf[frameSize+w.n:frameSize+ChunkSize+1])
		w.n += n
		total += int64(n)
		if w.n == ChunkSize+1 {
			extra := w.buf[frameSize+ChunkSize]
			if err := w.seal(w.buf[frameSize:frameSize+ChunkSize], false); err != nil {
				return total, err
			}
			w.buf[frameSize] = extra
			w.n = 1
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Close writes the final chunk. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if err := w.seal(w.buf[frameSize:frameSize+w.n], true); err != nil {
		return err
	}
	clear(w.buf)
	w.err = errors.New("write backup: writer is closed")
	return nil
}

// offsetReader counts the bytes read so that errors can say where.
type offsetReader struct {
	r   io.Reader
	off int64
}

func (o *offsetReader) readFull(b []byte) (int, error) {
	n, err := io.ReadFull(o.r, b)
	o.off += int64(n)
	return n, err
}

func headerErr(err error, off int64, detail string) *hsm.BackupError {
	return &hsm.BackupError{Err: err, Chunk: -1, Offset: off, Detail: detail}
}

// readHeader parses a header up to and including the tag.
func readHeader(or *offsetReader) (*Header, error) {
	raw := make([]byte, 0, 128)
	need := func(n int, what string) ([]byte, error) {
		start := len(raw)
		raw = append(raw, make([]byte, n)...)
		got, err := or.readFull(raw[start:])
		if err != nil {
			if (err == io.EOF || err == io.ErrUnexpectedEOF) && start == 0 && (got < len(magic) || !bytes.Equal(raw[:len(magic)], []byte(magic))) {
				return nil, headerErr(hsm.ErrNotBackup, 0, "the file is too short")
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil, headerErr(hsm.ErrBackupTruncated, or.off, "the file ends inside the "+what)
			}
			return nil, fmt.Errorf("read backup: %w", err)
		}
		return raw[start:], nil
	}
	b, err := need(22, "header")
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(b[:4], []byte(magic)) {
		return nil, headerErr(hsm.ErrNotBackup, 0, "")
	}
	if b[4] != Version {
		return nil, &hsm.BackupError{Err: hsm.ErrBackupVersion, Chunk: -1, Offset: 4, Version: int(b[4])}
	}
	h := &Header{}
	copy(h.KeyID[:], b[5:13])
	h.Created = time.Unix(int64(binary.BigEndian.Uint64(b[13:21])), 0).UTC()
	src, err := need(int(b[21])+1, "header")
	if err != nil {
		return nil, err
	}
	h.Source = string(src[:len(src)-1])
	ct, err := need(int(src[len(src)-1])+2, "header")
	if err != nil {
		return nil, err
	}
	h.Content = string(ct[:len(ct)-2])
	alg, wlen := ct[len(ct)-2], int(ct[len(ct)-1])
	wrapped, err := need(wlen, "header")
	if err != nil {
		return nil, err
	}
	sumOff := or.off
	sum, err := need(checksumSize, "header")
	if err != nil {
		return nil, err
	}
	want := sha256.Sum256(raw[:len(raw)-checksumSize])
	if !bytes.Equal(sum, want[:checksumSize]) {
		return nil, headerErr(hsm.ErrBackupTampered, sumOff, "header checksum does not match")
	}
	// Fields are checked after the checksum: a damaged header is reported as damaged.
	if err := h.validate(); err != nil {
		return nil, headerErr(hsm.ErrBackupTampered, 0, err.Error())
	}
	if alg != wrapKWP || wlen != WrappedLen(dataKeySize) {
		return nil, headerErr(hsm.ErrBackupTampered, sumOff-int64(wlen)-2, "unknown data key wrapping")
	}
	h.wrapped = wrapped
	tag, err := need(tagSize, "header tag")
	if err != nil {
		return nil, err
	}
	h.tag = tag
	h.raw = raw[:len(raw)-tagSize]
	return h, nil
}

// WrappedKey returns a copy of the backup's data key as wrapped under the MBK.
func (h *Header) WrappedKey() []byte { return bytes.Clone(h.wrapped) }

// ReadHeader reads and checks the header of a backup without any key: for showing what a
// backup is before restoring it. The header is authenticated only by [NewReader].
func ReadHeader(r io.Reader) (*Header, error) {
	return readHeader(&offsetReader{r: r})
}

// Reader decrypts a backup. It is not safe for concurrent use.
type Reader struct {
	r      *offsetReader
	h      *Header
	aead   cipher.AEAD
	buf    []byte
	plain  []byte // authenticated content not yet returned, inside buf
	chunk  uint64 // position of the next chunk
	final  bool   // the final chunk was read
	err    error
	frameN [frameSize]byte
	nonce  [12]byte
}

// NewReader reads the header of a backup from r, checks that it was made under the MBK of kw,
// unwraps the data key and authenticates the header.
func NewReader(ctx context.Context, r io.Reader, kw KeyWrapper) (*Reader, error) {
	or := &offsetReader{r: r}
	h, err := readHeader(or)
	if err != nil {
		return nil, err
	}
	if h.KeyID != kw.KeyID() {
		return nil, &hsm.ForeignKeyError{Got: h.KeyID, Want: kw.KeyID()}
	}
	dataKey, err := kw.UnwrapKey(ctx, h.wrapped)
	if errors.Is(err, ErrUnwrap) {
		// The key IDs match, so the MBK is the right one: the wrapped key was altered.
		return nil, headerErr(hsm.ErrBackupTampered, 0, "the data key does not unwrap under the master backup key it names")
	}
	if err != nil {
		return nil, fmt.Errorf("read backup: unwrap data key: %w", err)
	}
	aead, err := newAEAD(dataKey)
	hsm.Zero(dataKey)
	if err != nil {
		return nil, headerErr(hsm.ErrBackupTampered, 0, "the data key is not an AES-256 key")
	}
	var nc [12]byte
	nonce(&nc, 0, flagHeader)
	if _, err := aead.Open(nil, nc[:], h.tag, h.raw); err != nil {
		return nil, headerErr(hsm.ErrBackupTampered, 0, "header does not authenticate")
	}
	return &Reader{r: or, h: h, aead: aead, buf: make([]byte, ChunkSize+tagSize)}, nil
}

// Header returns the backup's header, authenticated.
func (r *Reader) Header() Header {
	h := *r.h
	h.wrapped, h.raw, h.tag = nil, nil, nil
	return h
}

// next reads, authenticates and decrypts the next chunk into buf, or into dst when dst can
// hold a whole chunk. It returns the content, io.EOF after the final chunk, or a typed error.
func (r *Reader) next(dst []byte) ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.final {
		var one [1]byte
		off := r.r.off
		n, err := r.r.readFull(one[:])
		if n > 0 {
			r.err = &hsm.BackupError{Err: hsm.ErrBackupTrailingData, Chunk: int64(r.chunk), Offset: off}
		} else if err != io.EOF {
			r.err = fmt.Errorf("read backup: %w", err)
		} else {
			r.err = io.EOF
		}
		return nil, r.err
	}
	pos := int64(r.chunk)
	start := r.r.off
	fail := func(e error, detail string) ([]byte, error) {
		r.err = &hsm.BackupError{Err: e, Chunk: pos, Offset: start, Detail: detail}
		return nil, r.err
	}
	n, err := r.r.readFull(r.frameN[:])
	if err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			if n == 0 {
				return fail(hsm.ErrBackupTruncated, fmt.Sprintf("the file ends after %d chunks, before the final chunk", pos))
			}
			return fail(hsm.ErrBackupTruncated, "the file ends inside the chunk header")
		}
		r.err = fmt.Errorf("read backup: %w", err)
		return nil, r.err
	}
	if crc32.Checksum(r.frameN[:13], castagnoli) != binary.BigEndian.Uint32(r.frameN[13:17]) {
		return fail(hsm.ErrBackupTampered, "chunk header checksum does not match")
	}
	found := binary.BigEndian.Uint64(r.frameN[0:8])
	flag := r.frameN[8]
	length := int(binary.BigEndian.Uint32(r.frameN[9:13]))
	switch {
	case flag != flagMore && flag != flagFinal:
		return fail(hsm.ErrBackupTampered, "unknown chunk flag")
	case flag == flagMore && length != ChunkSize+tagSize:
		return fail(hsm.ErrBackupTampered, "chunk of the wrong length")
	case length < tagSize || length > ChunkSize+tagSize:
		return fail(hsm.ErrBackupTampered, "chunk of the wrong length")
	}
	ct := r.buf[:length]
	if _, err := r.r.readFull(ct); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return fail(hsm.ErrBackupTruncated, "the file ends inside the chunk")
		}
		r.err = fmt.Errorf("read backup: %w", err)
		return nil, r.err
	}
	nonce(&r.nonce, found, flag)
	out := ct[:0]
	if len(dst) >= length-tagSize {
		out = dst[:0]
	}
	plain, err := r.aead.Open(out, r.nonce[:], ct, nil)
	if err != nil {
		return fail(hsm.ErrBackupTampered, "chunk does not authenticate")
	}
	if found != r.chunk {
		r.err = &hsm.BackupError{Err: hsm.ErrBackupReordered, Chunk: pos, Found: int64(found), Offset: start}
		return nil, r.err
	}
	if flag == flagFinal && len(plain) == 0 && pos > 0 {
		// Never written: a writer only ends with an empty chunk when the content is empty.
		return fail(hsm.ErrBackupTampered, "empty final chunk")
	}
	r.chunk++
	r.final = flag == flagFinal
	return plain, nil
}

// Read returns authenticated content. It returns io.EOF only after the final chunk, and a
// [*hsm.BackupError] for a truncated, reordered, altered or extended backup.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.plain) == 0 {
		if len(p) == 0 {
			return 0, nil
		}
		plain, err := r.next(p)
		if err != nil {
			return 0, err
		}
		if len(plain) > 0 && &plain[0] == &p[0] {
			return len(plain), nil
		}
		r.plain = plain
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	return n, nil
}

// WriteTo writes all authenticated content to w, chunk by chunk, without copying.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(r.plain) > 0 {
		n, err := w.Write(r.plain)
		total += int64(n)
		r.plain = nil
		if err != nil {
			return total, err
		}
	}
	for {
		plain, err := r.next(nil)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		n, err := w.Write(plain)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}
