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

// bdbFile reads pages of a Berkeley DB file through io.ReaderAt, one page
// at a time, so memory stays at a few pages whatever the file size.
type bdbFile struct {
	r        io.ReaderAt
	order    binary.ByteOrder
	pageSize int
	lastPgno uint32
}

func (f *bdbFile) page(pgno uint32, buf []byte) error {
	if pgno > f.lastPgno {
		return fmt.Errorf("page %d beyond the last page %d", pgno, f.lastPgno)
	}
	n, err := f.r.ReadAt(buf, int64(pgno)*int64(f.pageSize))
	if n == len(buf) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("page %d: truncated file", pgno)
	}
	return fmt.Errorf("page %d: %w", pgno, err)
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

	pg := make([]byte, f.pageSize)
	ov := make([]byte, f.pageSize)
	for pgno := uint32(1); pgno <= f.lastPgno; pgno++ {
		if err := f.page(pgno, pg); err != nil {
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
				value, err = f.overflow(f.order.Uint32(v[4:]), f.order.Uint32(v[8:]), ov)
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
func (f *bdbFile) overflow(pgno, total uint32, buf []byte) ([]byte, error) {
	// A value cannot be larger than the pages that could hold it.
	if int64(total) > int64(f.lastPgno)*int64(f.pageSize-bdbPageHeader) || total > maxRPMHeaderData+(1<<20) {
		return nil, fmt.Errorf("overflow value of %d bytes is larger than the file could hold", total)
	}
	out := make([]byte, 0, total)
	for hops := uint32(0); ; hops++ {
		if pgno == 0 || hops > f.lastPgno {
			return nil, fmt.Errorf("broken overflow chain after %d of %d bytes", len(out), total)
		}
		if err := f.page(pgno, buf); err != nil {
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
