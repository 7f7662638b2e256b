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
// any key. Both directions hold at most 16 chunks (about 2 MiB) in memory, whatever the size
// of the backup, and move them to and from the stream in 1 MiB reads and writes.
//
// What a backend puts inside is its own business, named by the header's content type. Both
// backends write object records ([WriteObjectRecord], [ObjectRecordReader]; content types
// "keyquorum/pkcs11-objects/2" and "keyquorum/soft-objects/2"): one record per object, every
// attribute that defines it and its key material wrapped under the MBK, as
// [AppendObjectRecord] details. The key records of version 1 backups ([RecordReader]; content
// types "keyquorum/pkcs11-keys/1" and "keyquorum/soft-keys/1", AES-256 keys only) are still read.
//
// # Format, version 2
//
// A header, then chunks. All integers are big-endian. Version 2 adds the backup's ID and the
// list of objects it left out on request; this package still reads version 1 (the same header
// without the three fields marked v2; its ID is then the first 16 bytes of SHA-256 over the
// header up to and including the checksum).
//
//	header
//	offset  size  field
//	0       4     magic "KQBK"
//	4       1     version (2; 1 is read too)
//	5       8     key ID of the MBK
//	13      8     creation time, Unix seconds
//	21      1     source node length S (0..255)
//	22      S     source node, UTF-8 without control characters
//	22+S    1     content type length C (1..64)
//	23+S    C     content type, printable ASCII, e.g. "keyquorum/soft-objects/2"
//	v2      16    backup ID, random
//	v2      4     number of skipped objects (all of them, named or not)
//	v2      2     length K of the skipped list (0..65535), then K bytes: per skipped object,
//	              kind, label, ID and reason, each a length byte and up to 255 bytes (text is
//	              UTF-8 without control characters); as many as fit
//	..      1     data key wrapping: 1 = AES Key Wrap with Padding (RFC 5649) under the MBK
//	..      1     wrapped data key length W (40)
//	..      W     the 32-byte data key, wrapped
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
// # Content: object records
//
// The content of a version 2 backup (content types "keyquorum/pkcs11-objects/2" and
// "keyquorum/soft-objects/2") is a sequence of object records, one per object of the HSM, and
// nothing else:
//
//	1  type 'O'
//	1  record version (1)
//	1  flags: bit 0 = an application key Keyquorum created (its key database), others 0
//	4  class, a PKCS#11 CKO_* value: 0 data, 1 certificate, 2 public key, 3 private key,
//	   4 secret key
//	4  type: the key type (CKK_*: 0 RSA, 3 EC, 0x10 generic secret, 0x15 DES3, 0x1f AES,
//	   0x40 EdDSA), the certificate type (CKC_*: 0 X.509), 0xffffffff for a data object
//	1  attribute count N (0..64), then N attributes in ascending order of type:
//	   4  the attribute type (PKCS#11 CKA_*), 4  the value's length (0..1 MiB), the value:
//	      CK_BBOOL as 1 byte (0 or 1), CK_ULONG as 8 bytes big-endian, others as the token
//	      holds them (CKA_LABEL, CKA_ID, CKA_VALUE, CKA_MODULUS, CKA_EC_PARAMS, ...)
//	4  material length, then the material: for secret and private keys the key wrapped under the
//	   MBK with AES Key Wrap with Padding (RFC 5649, PKCS#11 CKM_AES_KEY_WRAP_PAD; 16..16384
//	   bytes, a multiple of 8): a secret key's value, a private key's PKCS#8 PrivateKeyInfo
//	   (DER); 0 for other classes
//
// Which attributes a record carries for each class and type is [hsm.CarriedAttrs]: for every
// object CKA_LABEL, CKA_PRIVATE, CKA_MODIFIABLE; for keys CKA_ID, CKA_DERIVE and the usage flags
// of the class (secret keys: CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_ENCRYPT, CKA_DECRYPT, CKA_WRAP,
// CKA_UNWRAP, CKA_SIGN, CKA_VERIFY; private keys: CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_DECRYPT,
// CKA_SIGN, CKA_SIGN_RECOVER, CKA_UNWRAP, CKA_SUBJECT, CKA_ALWAYS_AUTHENTICATE and, derived from
// the key and only compared after a restore, CKA_MODULUS and CKA_PUBLIC_EXPONENT (RSA) or
// CKA_EC_PARAMS (EC, EdDSA); public keys: CKA_ENCRYPT, CKA_VERIFY, CKA_VERIFY_RECOVER, CKA_WRAP,
// CKA_SUBJECT, CKA_MODULUS and CKA_PUBLIC_EXPONENT or CKA_EC_PARAMS and CKA_EC_POINT);
// certificates CKA_ID, CKA_VALUE, CKA_SUBJECT, CKA_ISSUER, CKA_SERIAL_NUMBER,
// CKA_CERTIFICATE_CATEGORY; data objects CKA_APPLICATION, CKA_OBJECT_ID, CKA_VALUE. An attribute
// the object does not have is left out. Not carried: what a token computes itself (CKA_LOCAL,
// CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE, CKA_KEY_GEN_MECHANISM) and CKA_VALUE_LEN (the
// wrapped key's length tells it).
//
// Version 1 backups (content types "keyquorum/pkcs11-keys/1", "keyquorum/soft-keys/1") hold key
// records ([KeyRecord]: 'K', algorithm 1 = AES-256, ID, label, material: the key wrapped under
// the MBK for pkcs11, raw for soft); they are still restored, as AES-256 keys Keyquorum created.
//
// # What this package must never do
//
// Release content bytes that have not been authenticated, hold memory that grows with the
// backup, or keep the data key after the AEAD is set up. It knows nothing of bbolt, tokens or
// cards.
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
	// Version is the format version this package writes; it reads it and version 1.
	Version = 2

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
	Content string    // what the content is, e.g. "keyquorum/soft-objects/2"
	// ID names the backup: random in version 2, the first 16 bytes of SHA-256 over the
	// header (checksum included) in version 1. A restore journal names the backup by it.
	ID [16]byte
	// Skipped lists the objects the backup left out on request (version 2), as many as fit
	// in 65535 bytes; SkippedTotal counts them all.
	Skipped      []hsm.SkippedObject
	SkippedTotal int
	// Version is the format version of a header read; NewWriter writes [Version].
	Version int

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
	if h.Version == 1 && (len(h.Skipped) > 0 || h.SkippedTotal > 0) {
		return errors.New("a version 1 header lists no skipped objects")
	}
	for _, s := range h.Skipped {
		if !validText(s.Kind, 255, false) || !validText(s.Label, 255, false) || !validText(s.Reason, 255, false) || len(s.ID) > 255 {
			return errors.New("a skipped object's kind, label, ID and reason must be at most 255 bytes, text without control characters")
		}
	}
	if h.SkippedTotal < len(h.Skipped) || h.SkippedTotal > 1<<31-1 {
		return errors.New("skipped objects counted wrong")
	}
	if len(encodeSkipped(h.Skipped)) > maxSkipped {
		return errors.New("skipped objects list too long")
	}
	return nil
}

// maxSkipped bounds the encoded list of skipped objects in a header.
const maxSkipped = 65535

func encodeSkipped(list []hsm.SkippedObject) []byte {
	var b []byte
	for _, s := range list {
		b = append(b, byte(len(s.Kind)))
		b = append(b, s.Kind...)
		b = append(b, byte(len(s.Label)))
		b = append(b, s.Label...)
		b = append(b, byte(len(s.ID)))
		b = append(b, s.ID...)
		b = append(b, byte(len(s.Reason)))
		b = append(b, s.Reason...)
	}
	return b
}

func decodeSkipped(b []byte) ([]hsm.SkippedObject, bool) {
	var out []hsm.SkippedObject
	field := func() ([]byte, bool) {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return nil, false
		}
		f := b[1 : 1+int(b[0])]
		b = b[1+int(b[0]):]
		return f, true
	}
	for len(b) > 0 {
		var fs [4][]byte
		for i := range fs {
			f, ok := field()
			if !ok {
				return nil, false
			}
			fs[i] = f
		}
		out = append(out, hsm.SkippedObject{Kind: string(fs[0]), Label: string(fs[1]), ID: bytes.Clone(fs[2]), Reason: string(fs[3])})
	}
	return out, true
}

// SkipEntries lists objects as a header's skipped list: text cut to 255 bytes (at a character
// boundary) and control characters replaced (hsm.SkippedEntry), as many entries as fit in the
// header.
func SkipEntries(objs []hsm.Object) []hsm.SkippedObject {
	var out []hsm.SkippedObject
	n := 0
	for _, o := range objs {
		s := hsm.SkippedEntry(o)
		size := 4 + len(s.Kind) + len(s.Label) + len(s.ID) + len(s.Reason)
		if n+size > maxSkipped {
			break
		}
		n += size
		out = append(out, s)
	}
	return out
}

// marshal encodes the header up to and including the checksum.
func (h *Header) marshal() []byte {
	b := make([]byte, 0, 64+len(h.Source)+len(h.Content)+len(h.wrapped))
	b = append(b, magic...)
	b = append(b, byte(h.Version))
	b = append(b, h.KeyID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(h.Created.Unix()))
	b = append(b, byte(len(h.Source)))
	b = append(b, h.Source...)
	b = append(b, byte(len(h.Content)))
	b = append(b, h.Content...)
	if h.Version >= 2 {
		b = append(b, h.ID[:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(h.SkippedTotal))
		list := encodeSkipped(h.Skipped)
		b = binary.BigEndian.AppendUint16(b, uint16(len(list)))
		b = append(b, list...)
	}
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

// batch is how many chunks go to the underlying stream in one write, or come from it in one
// read: 1 MiB system calls instead of 64 KiB ones, which cost more than the crypto. It sets
// the memory a Writer or Reader holds: about 2 MiB, whatever the size of the backup.
const batch = 16

const maxFrame = frameSize + ChunkSize + tagSize

// Writer encrypts content into a backup. It is not safe for concurrent use.
type Writer struct {
	w       io.Writer
	aead    cipher.AEAD
	pending []byte // content not sealed yet; cap batch*ChunkSize+1
	out     []byte // sealed frames not written yet; cap batch*maxFrame
	chunk   uint64
	nonce   [12]byte // here, not on the stack: passed to an interface method it would escape
	err     error
}

// NewWriter writes the header of a new backup to w and returns the writer for its content.
// h names the source and the content type; its KeyID and Created are set by NewWriter (the MBK
// of kw, the current time unless h.Created is set).
func NewWriter(ctx context.Context, w io.Writer, kw KeyWrapper, h Header) (*Writer, error) {
	return newWriter(ctx, w, kw, h, Version)
}

// newWriter writes a header of the given version: tests write version 1 to check it is read.
func newWriter(ctx context.Context, w io.Writer, kw KeyWrapper, h Header, version int) (*Writer, error) {
	h.Version = version
	if h.SkippedTotal < len(h.Skipped) {
		h.SkippedTotal = len(h.Skipped)
	}
	if _, err := rand.Read(h.ID[:]); err != nil {
		return nil, fmt.Errorf("write backup: %w", err)
	}
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
	// Buffers start at one chunk (a key database is small) and grow to a batch once the
	// content fills one.
	return &Writer{
		w:       w,
		aead:    aead,
		pending: make([]byte, 0, ChunkSize+1),
		out:     make([]byte, 0, maxFrame),
	}, nil
}

// seal encrypts content as the next chunk into the output batch, writing the batch first if
// the chunk does not fit.
func (w *Writer) seal(content []byte, final bool) error {
	if cap(w.out)-len(w.out) < frameSize+len(content)+tagSize {
		if err := w.flush(); err != nil {
			return err
		}
	}
	flag := byte(flagMore)
	if final {
		flag = flagFinal
	}
	start := len(w.out)
	w.out = w.out[:start+frameSize]
	nonce(&w.nonce, w.chunk, flag)
	ct := w.aead.Seal(w.out[start+frameSize:start+frameSize], w.nonce[:], content, nil)
	f := w.out[start : start+frameSize]
	binary.BigEndian.PutUint64(f[0:8], w.chunk)
	f[8] = flag
	binary.BigEndian.PutUint32(f[9:13], uint32(len(ct)))
	binary.BigEndian.PutUint32(f[13:17], crc32.Checksum(f[:13], castagnoli))
	w.out = w.out[:start+frameSize+len(ct)]
	w.chunk++
	return nil
}

func (w *Writer) flush() error {
	if len(w.out) == 0 {
		return nil
	}
	if _, err := w.w.Write(w.out); err != nil {
		w.err = fmt.Errorf("write backup: %w", err)
		return w.err
	}
	w.out = w.out[:0]
	if cap(w.out) < batch*maxFrame {
		w.out = make([]byte, 0, batch*maxFrame)
	}
	return nil
}

// sealPending seals the whole chunks of pending content that more content follows, and moves
// the rest to the front.
func (w *Writer) sealPending() error {
	off := 0
	for len(w.pending)-off > ChunkSize {
		if err := w.seal(w.pending[off:off+ChunkSize], false); err != nil {
			return err
		}
		off += ChunkSize
	}
	if off > 0 {
		n := copy(w.pending, w.pending[off:])
		clear(w.pending[n:len(w.pending)])
		w.pending = w.pending[:n]
		if cap(w.pending) < batch*ChunkSize+1 {
			grown := make([]byte, n, batch*ChunkSize+1)
			copy(grown, w.pending)
			clear(w.pending[:cap(w.pending)])
			w.pending = grown
		}
	}
	return nil
}

// Write encrypts p. Chunks are sealed once more content follows them, and written in batches;
// [Writer.Close] writes the rest.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		if len(w.pending) == 0 && len(p) > ChunkSize {
			// A whole chunk with content after it: seal straight from p, no copy.
			if err := w.seal(p[:ChunkSize], false); err != nil {
				return written, err
			}
			p, written = p[ChunkSize:], written+ChunkSize
			continue
		}
		n := len(w.pending)
		c := copy(w.pending[n:cap(w.pending)], p)
		w.pending = w.pending[:n+c]
		p, written = p[c:], written+c
		if len(w.pending) == cap(w.pending) {
			if err := w.sealPending(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// ReadFrom encrypts everything r yields, reading a batch of chunks at a time straight into the
// content buffer.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	var total int64
	for {
		n := len(w.pending)
		k, err := io.ReadFull(r, w.pending[n:cap(w.pending)])
		w.pending = w.pending[:n+k]
		total += int64(k)
		if serr := w.sealPending(); serr != nil {
			return total, serr
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Close writes the final chunk and everything still buffered. It does not close the
// underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	err := w.sealPending()
	if err == nil {
		err = w.seal(w.pending, true)
	}
	if err == nil {
		err = w.flush()
	}
	clear(w.pending[:cap(w.pending)])
	if err != nil {
		return err
	}
	w.err = errors.New("write backup: writer is closed")
	return nil
}

func headerErr(err error, off int64, detail string) *hsm.BackupError {
	return &hsm.BackupError{Err: err, Chunk: -1, Offset: off, Detail: detail}
}

// maxHeader bounds an encoded header, tag included.
const maxHeader = 22 + maxSource + 1 + maxContentType + 16 + 4 + 2 + maxSkipped + 2 + 255 + checksumSize + tagSize

// source buffers the backup stream: frames are parsed and decrypted where they were read,
// and the offset of every byte is known for the errors.
type source struct {
	r          io.Reader
	in         []byte // in[start:end] is read and not consumed
	start, end int
	base       int64 // stream offset of in[0]
	readAhead  bool  // read as much as fits, not just what is needed
	err        error // the error r returned, io.EOF included
}

func (s *source) off() int64        { return s.base + int64(s.start) }
func (s *source) buffered() int     { return s.end - s.start }
func (s *source) peek(n int) []byte { return s.in[s.start : s.start+n] }

// take consumes n bytes made available by fill.
func (s *source) take(n int) []byte {
	b := s.in[s.start : s.start+n]
	s.start += n
	return b
}

// fill makes n bytes available; false if the stream ends first.
func (s *source) fill(n int) (bool, error) {
	for s.buffered() < n {
		if s.err == io.EOF {
			return false, nil
		}
		if s.err != nil {
			return false, s.err
		}
		if s.start+n > len(s.in) || (s.readAhead && len(s.in)-s.end < maxFrame) {
			in := s.in
			if s.readAhead && len(in) < batch*maxFrame {
				// The stream is longer than the first buffer: read in batches from now on.
				in = make([]byte, batch*maxFrame)
			}
			m := copy(in, s.in[s.start:s.end])
			s.in = in
			s.base += int64(s.start)
			s.start, s.end = 0, m
		}
		limit := s.start + n
		if s.readAhead {
			limit = len(s.in)
		}
		k, err := s.r.Read(s.in[s.end:limit])
		s.end += k
		s.err = err
	}
	return true, nil
}

// readHeader parses a header up to and including the tag.
func readHeader(src *source) (*Header, error) {
	raw := make([]byte, 0, 128)
	need := func(n int, what string) ([]byte, error) {
		ok, err := src.fill(n)
		if err != nil {
			return nil, fmt.Errorf("read backup: %w", err)
		}
		if !ok {
			if len(raw) == 0 && (src.buffered() < len(magic) || !bytes.Equal(src.peek(len(magic)), []byte(magic))) {
				return nil, headerErr(hsm.ErrNotBackup, 0, "the file is too short")
			}
			return nil, headerErr(hsm.ErrBackupTruncated, src.off()+int64(src.buffered()), "the file ends inside the "+what)
		}
		start := len(raw)
		raw = append(raw, src.take(n)...)
		return raw[start:], nil
	}
	b, err := need(22, "header")
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(b[:4], []byte(magic)) {
		return nil, headerErr(hsm.ErrNotBackup, 0, "")
	}
	if b[4] != 1 && b[4] != Version {
		return nil, &hsm.BackupError{Err: hsm.ErrBackupVersion, Chunk: -1, Offset: 4, Version: int(b[4])}
	}
	h := &Header{Version: int(b[4])}
	copy(h.KeyID[:], b[5:13])
	h.Created = time.Unix(int64(binary.BigEndian.Uint64(b[13:21])), 0).UTC()
	src1, err := need(int(b[21])+1, "header")
	if err != nil {
		return nil, err
	}
	h.Source = string(src1[:len(src1)-1])
	ct, err := need(int(src1[len(src1)-1])+2, "header")
	if err != nil {
		return nil, err
	}
	var alg byte
	var wlen int
	skippedOK := true
	if h.Version == 1 {
		h.Content = string(ct[:len(ct)-2])
		alg, wlen = ct[len(ct)-2], int(ct[len(ct)-1])
	} else {
		// Version 2: the content type's length byte was the last of ct; ID, count and list
		// length follow, then the list, then wrapping and wrapped key length.
		h.Content = string(ct[:len(ct)-2])
		rest := ct[len(ct)-2:] // the first two bytes of the ID
		more, err := need(16-2+4+2, "header")
		if err != nil {
			return nil, err
		}
		copy(h.ID[:2], rest)
		copy(h.ID[2:], more[:14])
		h.SkippedTotal = int(binary.BigEndian.Uint32(more[14:18]))
		list, err := need(int(binary.BigEndian.Uint16(more[18:20]))+2, "header")
		if err != nil {
			return nil, err
		}
		h.Skipped, skippedOK = decodeSkipped(list[:len(list)-2])
		alg, wlen = list[len(list)-2], int(list[len(list)-1])
	}
	wrapped, err := need(wlen, "header")
	if err != nil {
		return nil, err
	}
	sumOff := src.off()
	sum, err := need(checksumSize, "header")
	if err != nil {
		return nil, err
	}
	want := sha256.Sum256(raw[:len(raw)-checksumSize])
	if !bytes.Equal(sum, want[:checksumSize]) {
		return nil, headerErr(hsm.ErrBackupTampered, sumOff, "header checksum does not match")
	}
	// Fields are checked after the checksum: a damaged header is reported as damaged.
	if !skippedOK {
		return nil, headerErr(hsm.ErrBackupTampered, 0, "the list of skipped objects does not decode")
	}
	if h.Version == 1 {
		id := sha256.Sum256(raw)
		copy(h.ID[:], id[:16])
	}
	if err := h.validate(); err != nil {
		return nil, headerErr(hsm.ErrBackupTampered, 0, err.Error())
	}
	if alg != wrapKWP || wlen != WrappedLen(dataKeySize) {
		return nil, headerErr(hsm.ErrBackupTampered, sumOff-int64(wlen)-2, "unknown data key wrapping")
	}
	h.wrapped = bytes.Clone(wrapped)
	tag, err := need(tagSize, "header tag")
	if err != nil {
		return nil, err
	}
	h.tag = bytes.Clone(tag)
	h.raw = raw[:len(raw)-tagSize]
	return h, nil
}

// WrappedKey returns a copy of the backup's data key as wrapped under the MBK.
func (h *Header) WrappedKey() []byte { return bytes.Clone(h.wrapped) }

// ReadHeader reads and checks the header of a backup without any key: for showing what a
// backup is before restoring it. It reads no byte past the header. The header is
// authenticated only by [NewReader].
func ReadHeader(r io.Reader) (*Header, error) {
	return readHeader(&source{r: r, in: make([]byte, maxHeader)})
}

// Reader decrypts a backup. It is not safe for concurrent use.
type Reader struct {
	src   source
	h     *Header
	aead  cipher.AEAD
	plain []byte // authenticated content not yet returned by Read, inside plainBuf
	buf   []byte // Read's chunk buffer, or WriteTo's batch buffer
	chunk uint64 // position of the next chunk
	final bool   // the final chunk was read
	err   error
	nonce [12]byte
}

// NewReader reads the header of a backup from r, checks that it was made under the MBK of kw,
// unwraps the data key and authenticates the header. The Reader reads ahead of what it has
// returned: two chunks at first, about 1 MiB once the backup proves longer.
func NewReader(ctx context.Context, r io.Reader, kw KeyWrapper) (*Reader, error) {
	rd := &Reader{src: source{r: r, in: make([]byte, 2*maxFrame), readAhead: true}}
	h, err := readHeader(&rd.src)
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
	rd.h, rd.aead = h, aead
	return rd, nil
}

// Header returns the backup's header, authenticated.
func (r *Reader) Header() Header {
	h := *r.h
	h.wrapped, h.raw, h.tag = nil, nil, nil
	return h
}

// next reads, authenticates and decrypts the next chunk into dst, which must have room for
// ChunkSize bytes. It returns the content, io.EOF after the final chunk, or a typed error.
func (r *Reader) next(dst []byte) ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	r.err = r.advance()
	if r.err != nil {
		return nil, r.err
	}
	return r.open(dst)
}

// advance checks what comes next: a chunk, the end, or trailing data.
func (r *Reader) advance() error {
	ok, err := r.src.fill(1)
	if err != nil {
		return fmt.Errorf("read backup: %w", err)
	}
	switch {
	case r.final && ok:
		return &hsm.BackupError{Err: hsm.ErrBackupTrailingData, Chunk: int64(r.chunk), Offset: r.src.off()}
	case r.final:
		return io.EOF
	case !ok:
		return &hsm.BackupError{Err: hsm.ErrBackupTruncated, Chunk: int64(r.chunk), Offset: r.src.off(),
			Detail: fmt.Sprintf("the file ends after %d chunks, before the final chunk", r.chunk)}
	}
	return nil
}

func (r *Reader) open(dst []byte) ([]byte, error) {
	pos := int64(r.chunk)
	start := r.src.off()
	fail := func(e error, detail string) ([]byte, error) {
		r.err = &hsm.BackupError{Err: e, Chunk: pos, Offset: start, Detail: detail}
		return nil, r.err
	}
	ok, err := r.src.fill(frameSize)
	if err != nil {
		r.err = fmt.Errorf("read backup: %w", err)
		return nil, r.err
	}
	if !ok {
		return fail(hsm.ErrBackupTruncated, "the file ends inside the chunk header")
	}
	f := r.src.peek(frameSize)
	if crc32.Checksum(f[:13], castagnoli) != binary.BigEndian.Uint32(f[13:17]) {
		return fail(hsm.ErrBackupTampered, "chunk header checksum does not match")
	}
	found := binary.BigEndian.Uint64(f[0:8])
	flag := f[8]
	length := int(binary.BigEndian.Uint32(f[9:13]))
	switch {
	case flag != flagMore && flag != flagFinal:
		return fail(hsm.ErrBackupTampered, "unknown chunk flag")
	case flag == flagMore && length != ChunkSize+tagSize:
		return fail(hsm.ErrBackupTampered, "chunk of the wrong length")
	case length < tagSize || length > ChunkSize+tagSize:
		return fail(hsm.ErrBackupTampered, "chunk of the wrong length")
	}
	if ok, err := r.src.fill(frameSize + length); err != nil {
		r.err = fmt.Errorf("read backup: %w", err)
		return nil, r.err
	} else if !ok {
		return fail(hsm.ErrBackupTruncated, "the file ends inside the chunk")
	}
	ct := r.src.take(frameSize + length)[frameSize:]
	nonce(&r.nonce, found, flag)
	plain, err := r.aead.Open(dst[:0], r.nonce[:], ct, nil)
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

// wipe clears the plaintext buffer once the stream is done.
func (r *Reader) wipe() {
	clear(r.buf[:cap(r.buf)])
	r.plain = nil
}

// Read returns authenticated content. It returns io.EOF only after the final chunk, and a
// [*hsm.BackupError] for a truncated, reordered, altered or extended backup.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.plain) == 0 {
		if len(p) == 0 {
			return 0, nil
		}
		var plain []byte
		var err error
		if len(p) >= ChunkSize {
			plain, err = r.next(p)
		} else {
			if cap(r.buf) < ChunkSize {
				r.buf = make([]byte, ChunkSize)
			}
			plain, err = r.next(r.buf[:ChunkSize])
		}
		if err != nil {
			r.wipe()
			return 0, err
		}
		if len(p) >= ChunkSize {
			if len(plain) > 0 {
				return len(plain), nil
			}
			continue // the empty final chunk of an empty backup: go on to io.EOF
		}
		r.plain = plain
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	return n, nil
}

// WriteTo writes all authenticated content to w, decrypting a batch of chunks for each write.
// Content before an error is written too: it is authentic, but the backup is not whole.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	write := func(b []byte) error {
		n, err := w.Write(b)
		total += int64(n)
		return err
	}
	if len(r.plain) > 0 {
		if err := write(r.plain); err != nil {
			return total, err
		}
		r.plain = nil
	}
	if cap(r.buf) < ChunkSize {
		r.buf = make([]byte, 0, ChunkSize)
	}
	out := r.buf[:0]
	defer r.wipe()
	for {
		if cap(out)-len(out) < ChunkSize {
			if err := write(out); err != nil {
				return total, err
			}
			if cap(out) < batch*ChunkSize {
				clear(out)
				r.buf = make([]byte, 0, batch*ChunkSize)
			}
			out = r.buf[:0]
		}
		plain, err := r.next(out[len(out) : len(out)+ChunkSize])
		if err != nil {
			if werr := write(out); werr != nil {
				return total, werr
			}
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
		out = out[:len(out)+len(plain)]
	}
}
