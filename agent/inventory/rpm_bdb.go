package inventory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Berkeley DB hash database layout (db_page.h), as rpm's Packages file on
// Amazon Linux 2, RHEL/CentOS 7 and older uses it.
const (
	bdbHashMagic   = 0x061561
	bdbBtreeMagic  = 0x053162
	bdbPageHeader  = 26 // LSN, pgno, prev, next, entries, hf_offset, level, type
	bdbMetaMinSize = 512

	bdbPageHashUnsorted = 2
	bdbPageOverflow     = 7
	bdbPageHashMeta     = 8
	bdbPageHash         = 13

	bdbItemKeyData = 1
	bdbItemOffPage = 3

	bdbMetaFlagChecksum = 0x01
)

// bdbWindowPages is how many pages one read brings in. The scan and the
// overflow chains (whose pages mostly follow each other) each have their
// own window, so a database costs a few dozen reads rather than two per
// page, and memory stays at two windows whatever the file size.
const bdbWindowPages = 64

// bdbFile reads pages of a Berkeley DB file through io.ReaderAt.
type bdbFile struct {
	r        io.ReaderAt
	order    binary.ByteOrder
	pageSize int
	lastPgno uint32
}

// bdbWindow holds consecutive pages starting at start.
type bdbWindow struct {
	start uint32
	n     uint32
	buf   []byte
}

// page returns page pgno, a slice of w valid until w's next load. A load
// reads want pages (at most a window) from pgno on.
func (f *bdbFile) page(w *bdbWindow, pgno, want uint32) ([]byte, error) {
	if pgno > f.lastPgno {
		return nil, fmt.Errorf("page %d beyond the last page %d", pgno, f.lastPgno)
	}
	if w.n == 0 || pgno < w.start || pgno >= w.start+w.n {
		n := min(uint32(bdbWindowPages), f.lastPgno-pgno+1, max(want, 1))
		if w.buf == nil {
			w.buf = make([]byte, bdbWindowPages*f.pageSize)
		}
		w.start, w.n = pgno, 0
		if err := readFullAt(f.r, w.buf[:int(n)*f.pageSize], int64(pgno)*int64(f.pageSize)); err != nil {
			return nil, fmt.Errorf("pages %d-%d: %w", pgno, pgno+n-1, err)
		}
		w.n = n
	}
	off := int(pgno-w.start) * f.pageSize
	return w.buf[off : off+f.pageSize], nil
}

// readBDBHash walks every hash page of a Berkeley DB hash database and
// calls fn with each record's key (as rpm's uint32 header number) and
// value. Values stored on overflow pages are reassembled; the record with
// key 0 (rpm's "next instance" counter) is skipped. The database is only
// read. Every offset is checked, page chains are bounded by the page
// count, and a malformed page is an error, never a panic or a loop.
func readBDBHash(r io.ReaderAt, size int64, fn func(key uint32, value []byte) error) error {
	meta := make([]byte, bdbMetaMinSize)
	if n, err := r.ReadAt(meta, 0); n < len(meta) {
		if err == nil || errors.Is(err, io.EOF) {
			return fmt.Errorf("file of %d bytes is too short for a Berkeley DB", size)
		}
		return fmt.Errorf("read metadata page: %w", err)
	}
	f := &bdbFile{r: r}
	switch {
	case binary.LittleEndian.Uint32(meta[12:]) == bdbHashMagic:
		f.order = binary.LittleEndian
	case binary.BigEndian.Uint32(meta[12:]) == bdbHashMagic:
		f.order = binary.BigEndian
	case binary.LittleEndian.Uint32(meta[12:]) == bdbBtreeMagic || binary.BigEndian.Uint32(meta[12:]) == bdbBtreeMagic:
		return errors.New("a Berkeley DB btree, not the hash database rpm writes")
	default:
		return errors.New("not a Berkeley DB hash database (bad magic)")
	}
	f.pageSize = int(f.order.Uint32(meta[20:]))
	if f.pageSize < 512 || f.pageSize > 65536 || f.pageSize&(f.pageSize-1) != 0 {
		return fmt.Errorf("invalid page size %d", f.pageSize)
	}
	if meta[25] != bdbPageHashMeta {
		return fmt.Errorf("page 0 has type %d, not hash metadata", meta[25])
	}
	if meta[24] != 0 {
		return errors.New("encrypted Berkeley DB is not supported")
	}
	if meta[26]&bdbMetaFlagChecksum != 0 {
		return errors.New("checksummed Berkeley DB pages are not supported")
	}
	f.lastPgno = f.order.Uint32(meta[32:])
	if need := (int64(f.lastPgno) + 1) * int64(f.pageSize); need > size {
		return fmt.Errorf("truncated: the metadata names %d pages (%d bytes), the file has %d bytes", f.lastPgno+1, need, size)
	}

	var scan, ov bdbWindow
	for pgno := uint32(1); pgno <= f.lastPgno; pgno++ {
		pg, err := f.page(&scan, pgno, bdbWindowPages)
		if err != nil {
			return err
		}
		if t := pg[25]; t != bdbPageHash && t != bdbPageHashUnsorted {
			continue
		}
		items, err := f.items(pg, pgno)
		if err != nil {
			return err
		}
		for i := 0; i+1 < len(items); i += 2 {
			k, v := items[i], items[i+1]
			if k[0] != bdbItemKeyData {
				return fmt.Errorf("page %d item %d: key of type %d", pgno, i, k[0])
			}
			key := k[1:]
			if len(key) == 4 && f.order.Uint32(key) == 0 {
				continue
			}
			var id uint32
			if len(key) == 4 {
				id = f.order.Uint32(key)
			}
			var value []byte
			switch v[0] {
			case bdbItemKeyData:
				value = append([]byte(nil), v[1:]...)
			case bdbItemOffPage:
				if len(v) < 12 {
					return fmt.Errorf("page %d item %d: short off-page reference", pgno, i+1)
				}
				value, err = f.overflow(f.order.Uint32(v[4:]), f.order.Uint32(v[8:]), &ov)
				if err != nil {
					return fmt.Errorf("page %d item %d: %w", pgno, i+1, err)
				}
			default:
				return fmt.Errorf("page %d item %d: unsupported item type %d (duplicates are not used by rpm)", pgno, i+1, v[0])
			}
			if err := fn(id, value); err != nil {
				return err
			}
		}
	}
	return nil
}

// items returns the items of a hash page as slices of it. An item's length
// is implied by the offset of the item before it (BDB's LEN_HITEM):
// offsets must descend, which is checked so that a bad page cannot yield
// a negative length.
func (f *bdbFile) items(pg []byte, pgno uint32) ([][]byte, error) {
	n := int(f.order.Uint16(pg[20:]))
	if n%2 != 0 {
		return nil, fmt.Errorf("page %d: odd item count %d on a hash page", pgno, n)
	}
	lo := bdbPageHeader + 2*n
	if lo > f.pageSize {
		return nil, fmt.Errorf("page %d: %d items do not fit the page", pgno, n)
	}
	items := make([][]byte, n)
	end := f.pageSize
	for i := range n {
		off := int(f.order.Uint16(pg[bdbPageHeader+2*i:]))
		if off < lo || off >= end {
			return nil, fmt.Errorf("page %d: item %d at offset %d outside %d..%d", pgno, i, off, lo, end)
		}
		items[i] = pg[off:end]
		end = off
	}
	return items, nil
}

// overflow reassembles a value stored on a chain of overflow pages; each
// page holds hf_offset bytes after its header. The chain may not visit
// more pages than the file has.
func (f *bdbFile) overflow(pgno, total uint32, w *bdbWindow) ([]byte, error) {
	// A value cannot be larger than the pages that could hold it.
	if int64(total) > int64(f.lastPgno)*int64(f.pageSize-bdbPageHeader) || total > maxRPMHeaderData+(1<<20) {
		return nil, fmt.Errorf("overflow value of %d bytes is larger than the file could hold", total)
	}
	out := make([]byte, 0, total)
	for hops := uint32(0); ; hops++ {
		if pgno == 0 || hops > f.lastPgno {
			return nil, fmt.Errorf("broken overflow chain after %d of %d bytes", len(out), total)
		}
		// The rest of the value, if its pages follow each other.
		left := uint32(int(total) - len(out))
		buf, err := f.page(w, pgno, left/uint32(f.pageSize-bdbPageHeader)+1)
		if err != nil {
			return nil, err
		}
		if buf[25] != bdbPageOverflow {
			return nil, fmt.Errorf("page %d has type %d in an overflow chain", pgno, buf[25])
		}
		n := int(f.order.Uint16(buf[22:]))
		if bdbPageHeader+n > f.pageSize || len(out)+n > int(total) {
			return nil, fmt.Errorf("overflow page %d holds %d bytes, more than fits", pgno, n)
		}
		out = append(out, buf[bdbPageHeader:bdbPageHeader+n]...)
		if len(out) == int(total) {
			return out, nil
		}
		pgno = f.order.Uint32(buf[16:])
	}
}
