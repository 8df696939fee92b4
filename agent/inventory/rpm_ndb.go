package inventory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// rpm's ndb Packages.db layout (lib/backend/ndb/rpmpkg.c), as SUSE uses
// it: a 32-byte header, slot pages of 16-byte slots naming where each
// package's blob lies, and the blobs in 16-byte blocks, each framed by a
// head and a tail. All integers are little-endian.
const (
	ndbMagic         = 'R' | 'p'<<8 | 'm'<<16 | 'P'<<24
	ndbSlotMagic     = 'S' | 'l'<<8 | 'o'<<16 | 't'<<24
	ndbBlobHeadMagic = 'B' | 'l'<<8 | 'b'<<16 | 'S'<<24
	ndbBlobTailMagic = 'B' | 'l'<<8 | 'b'<<16 | 'E'<<24

	ndbHeaderSize   = 32
	ndbSlotSize     = 16
	ndbBlkSize      = 16
	ndbPageSize     = 4096
	ndbBlobHeadSize = 16
	ndbBlobTailSize = 12
)

type ndbSlot struct{ pkgidx, blkoff, blkcnt uint32 }

// readNDB reads every blob of an ndb Packages.db, in package-index order,
// with the same consistency checks rpm applies when it reads the slots and
// each blob (it does not verify the Adler-32 either, as rpm does not on a
// plain read).
func readNDB(r io.ReaderAt, size int64, fn func(pkgidx uint32, blob []byte) error) error {
	if size < ndbHeaderSize {
		return fmt.Errorf("file of %d bytes is too short for an ndb database", size)
	}
	if size%ndbBlkSize != 0 {
		return fmt.Errorf("file size %d is not a multiple of %d (truncated?)", size, ndbBlkSize)
	}
	hdr := make([]byte, ndbHeaderSize)
	if err := readFullAt(r, hdr, 0); err != nil {
		return fmt.Errorf("read header: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint32(hdr[0:]) != ndbMagic {
		return errors.New("not an rpm ndb database (bad magic)")
	}
	if v := le.Uint32(hdr[4:]); v != 0 {
		return fmt.Errorf("ndb version %d is not supported", v)
	}
	slotPages := le.Uint32(hdr[12:])
	if int64(slotPages)*ndbPageSize > size {
		return fmt.Errorf("truncated: %d slot pages do not fit a %d-byte file", slotPages, size)
	}
	fileBlks := uint64(size / ndbBlkSize)
	minBlkoff := uint64(slotPages) * (ndbPageSize / ndbBlkSize)

	var slots []ndbSlot
	page := make([]byte, ndbPageSize)
	for pg := uint32(0); pg < slotPages; pg++ {
		if err := readFullAt(r, page, int64(pg)*ndbPageSize); err != nil {
			return fmt.Errorf("read slot page %d: %w", pg, err)
		}
		first := 0
		if pg == 0 {
			first = ndbHeaderSize
		}
		for o := first; o < ndbPageSize; o += ndbSlotSize {
			s := page[o : o+ndbSlotSize]
			if le.Uint32(s) != ndbSlotMagic {
				return fmt.Errorf("slot page %d offset %d: bad slot magic", pg, o)
			}
			sl := ndbSlot{pkgidx: le.Uint32(s[4:]), blkoff: le.Uint32(s[8:]), blkcnt: le.Uint32(s[12:])}
			if sl.blkoff == 0 {
				continue // a free slot
			}
			end := uint64(sl.blkoff) + uint64(sl.blkcnt)
			switch {
			case end > fileBlks:
				return fmt.Errorf("package %d: blob ends at block %d, past the end of the file (%d blocks): truncated database", sl.pkgidx, end, fileBlks)
			case sl.pkgidx == 0 || sl.blkcnt == 0 || uint64(sl.blkoff) < minBlkoff:
				return fmt.Errorf("slot page %d offset %d: bad slot (package %d, block %d, count %d)", pg, o, sl.pkgidx, sl.blkoff, sl.blkcnt)
			}
			slots = append(slots, sl)
		}
	}
	slices.SortFunc(slots, func(a, b ndbSlot) int { return int(int64(a.pkgidx) - int64(b.pkgidx)) })

	var buf []byte
	for _, sl := range slots {
		n := int(sl.blkcnt) * ndbBlkSize
		if n < ndbBlobHeadSize+ndbBlobTailSize {
			return fmt.Errorf("package %d: blob of %d blocks is too small", sl.pkgidx, sl.blkcnt)
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		b := buf[:n]
		if err := readFullAt(r, b, int64(sl.blkoff)*ndbBlkSize); err != nil {
			return fmt.Errorf("package %d: read blob: %w", sl.pkgidx, err)
		}
		if le.Uint32(b) != ndbBlobHeadMagic || le.Uint32(b[4:]) != sl.pkgidx {
			return fmt.Errorf("package %d: bad blob header", sl.pkgidx)
		}
		blobLen := uint64(le.Uint32(b[12:]))
		if want := (ndbBlobHeadSize + blobLen + ndbBlobTailSize + ndbBlkSize - 1) / ndbBlkSize; want != uint64(sl.blkcnt) {
			return fmt.Errorf("package %d: blob of %d bytes does not fill its %d blocks", sl.pkgidx, blobLen, sl.blkcnt)
		}
		tail := b[n-ndbBlobTailSize:]
		if uint64(le.Uint32(tail[4:])) != blobLen || le.Uint32(tail[8:]) != ndbBlobTailMagic {
			return fmt.Errorf("package %d: bad blob trailer", sl.pkgidx)
		}
		blob := append([]byte(nil), b[ndbBlobHeadSize:ndbBlobHeadSize+blobLen]...)
		if err := fn(sl.pkgidx, blob); err != nil {
			return err
		}
	}
	return nil
}

// readFullAt fills buf from off, calling a short read a truncated file.
func readFullAt(r io.ReaderAt, buf []byte, off int64) error {
	n, err := r.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("truncated file: %d of %d bytes at offset %d", n, len(buf), off)
	}
	return err
}
