package sender

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/proto"
)

// Spool is a Queue on disk, so unacked data survives an agent restart (the
// DaemonSet mounts the spool directory from the host).
//
// Layout: segment files named by their first item id, each a sequence of
// records [u32 length][u32 crc32c][u64 id][protobuf ConnectRequest]; and a
// small "state" file holding the sequence offset and the highest acked id.
// A torn record at the end of the last segment (a crash mid-write) is cut
// off on open. When the spool would exceed its size bound, whole segments
// are dropped, oldest first, and the events they held are counted as lost.
type Spool struct {
	dir         string
	maxBytes    int64
	segmentSize int64

	segs      []*segment
	cur       *os.File
	curW      *bufio.Writer
	nextID    uint64
	acked     uint64
	offset    int64
	hasOffset bool
	// readCache holds the last segment read, for Next's sequential scans.
	readCache *segmentData
}

type segment struct {
	first, last uint64 // ids; last == first-1 while empty
	path        string
	size        int64
	dropped     Dropped // what dropping this segment would lose
}

type segmentData struct {
	path  string
	size  int64
	items []memItem
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const recordHeader = 16

// OpenSpool opens (or creates) a spool in dir bounded by maxBytes.
func OpenSpool(dir string, maxBytes int64) (*Spool, error) {
	if maxBytes < 1<<20 {
		return nil, fmt.Errorf("spool: --spool-max-bytes must be at least 1 MiB, got %d", maxBytes)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	s := &Spool{dir: dir, maxBytes: maxBytes, segmentSize: max(maxBytes/16, 256<<10), nextID: 1}
	if err := s.loadState(); err != nil {
		return nil, err
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	sort.Strings(names)
	for i, p := range names {
		seg, err := scanSegment(p, i == len(names)-1)
		if err != nil {
			return nil, err
		}
		if seg.last < seg.first || seg.last <= s.acked {
			_ = os.Remove(p)
			continue
		}
		s.segs = append(s.segs, seg)
		s.nextID = max(s.nextID, seg.last+1)
	}
	s.nextID = max(s.nextID, s.acked+1)
	return s, nil
}

func segmentName(first uint64) string { return fmt.Sprintf("%020d.seg", first) }

// scanSegment reads a segment's records, cutting a torn tail when it is the
// last segment; a damaged record elsewhere ends the segment there.
func scanSegment(path string, last bool) (*segment, error) {
	first, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(path), ".seg"), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("spool: unexpected file %s", path)
	}
	seg := &segment{first: first, last: first - 1, path: path}
	items, good, err := readRecords(path)
	if err != nil {
		return nil, err
	}
	for _, it := range items {
		seg.last = it.id
		seg.dropped.add(it.req)
	}
	seg.size = good
	if fi, err := os.Stat(path); err == nil && fi.Size() > good && last {
		if err := os.Truncate(path, good); err != nil {
			return nil, fmt.Errorf("spool: cut torn record in %s: %w", path, err)
		}
	}
	return seg, nil
}

// readRecords decodes every whole, intact record and the byte length they
// span.
func readRecords(path string) ([]memItem, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var (
		items []memItem
		good  int64
		hdr   [recordHeader]byte
	)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return items, good, nil
		}
		n := binary.LittleEndian.Uint32(hdr[0:4])
		sum := binary.LittleEndian.Uint32(hdr[4:8])
		id := binary.LittleEndian.Uint64(hdr[8:16])
		if n > 64<<20 {
			return items, good, nil
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return items, good, nil
		}
		if crc32.Checksum(append(hdr[8:16:16], body...), castagnoli) != sum {
			return items, good, nil
		}
		req := &nodewardv1.ConnectRequest{}
		if err := proto.Unmarshal(body, req); err != nil {
			return items, good, nil
		}
		items = append(items, memItem{id, req})
		good += recordHeader + int64(n)
	}
}

func (s *Spool) statePath() string { return filepath.Join(s.dir, "state") }

// loadState reads "offset acked" (offset "-" when unset).
func (s *Spool) loadState() error {
	b, err := os.ReadFile(s.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("spool state: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return fmt.Errorf("spool state %s: malformed %q", s.statePath(), b)
	}
	if f[0] != "-" {
		o, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return fmt.Errorf("spool state %s: %w", s.statePath(), err)
		}
		s.offset, s.hasOffset = o, true
	}
	a, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return fmt.Errorf("spool state %s: %w", s.statePath(), err)
	}
	s.acked = a
	return nil
}

func (s *Spool) saveState() error {
	off := "-"
	if s.hasOffset {
		off = strconv.FormatInt(s.offset, 10)
	}
	tmp := s.statePath() + ".tmp"
	if err := os.WriteFile(tmp, []byte(off+" "+strconv.FormatUint(s.acked, 10)+"\n"), 0o600); err != nil {
		return fmt.Errorf("spool state: %w", err)
	}
	if err := os.Rename(tmp, s.statePath()); err != nil {
		return fmt.Errorf("spool state: %w", err)
	}
	return nil
}

func (s *Spool) totalBytes() int64 {
	var n int64
	for _, seg := range s.segs {
		n += seg.size
	}
	return n
}

// Append implements Queue.
func (s *Spool) Append(req *nodewardv1.ConnectRequest) (Dropped, error) {
	var dropped Dropped
	body, err := proto.Marshal(req)
	if err != nil {
		return dropped, fmt.Errorf("spool: encode: %w", err)
	}
	size := recordHeader + int64(len(body))
	if size > s.maxBytes/2 {
		return dropped, fmt.Errorf("spool: a %d-byte message exceeds half the spool", size)
	}
	// Make room by dropping whole segments, oldest first; never the one
	// being written.
	for s.totalBytes()+size > s.maxBytes && len(s.segs) > 1 {
		old := s.segs[0]
		dropped.Events += old.dropped.Events
		dropped.Reported += old.dropped.Reported
		if err := os.Remove(old.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return dropped, fmt.Errorf("spool: drop %s: %w", old.path, err)
		}
		s.segs = s.segs[1:]
		s.readCache = nil
	}
	if err := s.ensureWritable(size); err != nil {
		return dropped, err
	}
	id := s.nextID
	var hdr [recordHeader]byte
	binary.LittleEndian.PutUint32(hdr[0:4], uint32(len(body)))
	binary.LittleEndian.PutUint64(hdr[8:16], id)
	binary.LittleEndian.PutUint32(hdr[4:8], crc32.Checksum(append(hdr[8:16:16], body...), castagnoli))
	if _, err := s.curW.Write(hdr[:]); err != nil {
		return dropped, fmt.Errorf("spool: write: %w", err)
	}
	if _, err := s.curW.Write(body); err != nil {
		return dropped, fmt.Errorf("spool: write: %w", err)
	}
	// Flushed to the kernel per record: a killed agent loses nothing it
	// appended; fsync is left to the kernel's writeback.
	if err := s.curW.Flush(); err != nil {
		return dropped, fmt.Errorf("spool: write: %w", err)
	}
	seg := s.segs[len(s.segs)-1]
	seg.last = id
	seg.size += size
	seg.dropped.add(req)
	s.nextID++
	if s.readCache != nil && s.readCache.path == seg.path {
		s.readCache.items = append(s.readCache.items, memItem{id, req})
		s.readCache.size = seg.size
	}
	return dropped, nil
}

// ensureWritable opens the newest segment for appending, starting a new one
// when it is full.
func (s *Spool) ensureWritable(size int64) error {
	if n := len(s.segs); n > 0 && s.cur != nil && s.segs[n-1].size+size <= s.segmentSize {
		return nil
	}
	if n := len(s.segs); n > 0 && s.cur == nil && s.segs[n-1].size+size <= s.segmentSize {
		f, err := os.OpenFile(s.segs[n-1].path, os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		s.cur, s.curW = f, bufio.NewWriter(f)
		return nil
	}
	if s.cur != nil {
		if err := s.cur.Close(); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
	}
	p := filepath.Join(s.dir, segmentName(s.nextID))
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.cur, s.curW = f, bufio.NewWriter(f)
	s.segs = append(s.segs, &segment{first: s.nextID, last: s.nextID - 1, path: p})
	return nil
}

// Next implements Queue.
func (s *Spool) Next(after uint64) (uint64, *nodewardv1.ConnectRequest, bool, error) {
	for _, seg := range s.segs {
		if seg.last <= after || seg.last < seg.first {
			continue
		}
		if s.readCache == nil || s.readCache.path != seg.path || s.readCache.size != seg.size {
			items, _, err := readRecords(seg.path)
			if err != nil {
				return 0, nil, false, err
			}
			s.readCache = &segmentData{path: seg.path, size: seg.size, items: items}
		}
		for _, it := range s.readCache.items {
			if it.id > after && it.id > s.acked {
				return it.id, it.req, true, nil
			}
		}
	}
	return 0, nil, false, nil
}

// Ack implements Queue.
func (s *Spool) Ack(id uint64) error {
	if id <= s.acked {
		return nil
	}
	s.acked = id
	for len(s.segs) > 0 && s.segs[0].last <= id && s.segs[0].last >= s.segs[0].first {
		if len(s.segs) == 1 && s.cur != nil {
			// Keep the segment being written; it is cut on the next open.
			break
		}
		if err := os.Remove(s.segs[0].path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("spool: %w", err)
		}
		s.segs = s.segs[1:]
	}
	return s.saveState()
}

// First implements Queue.
func (s *Spool) First() uint64 {
	for _, seg := range s.segs {
		if lo := max(seg.first, s.acked+1); seg.last >= lo {
			return lo
		}
	}
	return s.nextID
}

// Offset implements Queue.
func (s *Spool) Offset() (int64, bool) { return s.offset, s.hasOffset }

// SetOffset implements Queue.
func (s *Spool) SetOffset(o int64) error {
	s.offset, s.hasOffset = o, true
	return s.saveState()
}

// Len implements Queue.
func (s *Spool) Len() int {
	n := 0
	for _, seg := range s.segs {
		if seg.last >= seg.first {
			lo := max(seg.first, s.acked+1)
			if seg.last >= lo {
				n += int(seg.last - lo + 1)
			}
		}
	}
	return n
}

// Bytes is the spool's size on disk.
func (s *Spool) Bytes() int64 { return s.totalBytes() }

// Close flushes and closes the segment being written.
func (s *Spool) Close() error {
	if s.cur == nil {
		return nil
	}
	err := errors.Join(s.curW.Flush(), s.cur.Close())
	s.cur = nil
	return err
}
