package inventory

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/internal/testutil"
)

// rpmEntry is one index entry for buildRPMHeader.
type rpmEntry struct {
	tag, typ uint32
	data     []byte
	count    uint32
}

func rpmStr(tag uint32, s string) rpmEntry {
	return rpmEntry{tag, rpmTypeString, append([]byte(s), 0), 1}
}

func rpmI32(tag, v uint32) rpmEntry {
	return rpmEntry{tag, rpmTypeInt32, binary.BigEndian.AppendUint32(nil, v), 1}
}

// buildRPMHeader lays entries out as rpmdb stores a header: il, dl, the
// index, then the data store with INT32 values 4-aligned.
func buildRPMHeader(entries ...rpmEntry) []byte {
	var data []byte
	index := make([]byte, 0, 16*len(entries))
	for _, e := range entries {
		if e.typ == rpmTypeInt32 {
			for len(data)%4 != 0 {
				data = append(data, 0)
			}
		}
		index = binary.BigEndian.AppendUint32(index, e.tag)
		index = binary.BigEndian.AppendUint32(index, e.typ)
		index = binary.BigEndian.AppendUint32(index, uint32(len(data)))
		index = binary.BigEndian.AppendUint32(index, e.count)
		data = append(data, e.data...)
	}
	out := binary.BigEndian.AppendUint32(nil, uint32(len(entries)))
	out = binary.BigEndian.AppendUint32(out, uint32(len(data)))
	return append(append(out, index...), data...)
}

func TestParseRPMHeader(t *testing.T) {
	full := buildRPMHeader(rpmStr(rpmTagName, "glibc"), rpmStr(rpmTagVersion, "2.26"), rpmStr(rpmTagRelease, "32.amzn2.0.1"),
		rpmI32(rpmTagEpoch, 3), rpmStr(rpmTagArch, "x86_64"), rpmI32(rpmTagInstallTime, 1557345630),
		rpmStr(rpmTagSourceRPM, "glibc-2.26-32.amzn2.0.1.src.rpm"))
	p, err := parseRPMHeader(full)
	if err != nil {
		t.Fatal(err)
	}
	r := rowOf(p)
	want := pkgRow{name: "glibc", epoch: "3", version: "2.26", release: "32.amzn2.0.1", arch: "x86_64", state: "installed",
		installTime: "1557345630", sourceName: "glibc", sourceVersion: "2.26-32.amzn2.0.1"}
	if r != want {
		t.Errorf("got %+v\nwant %+v", r, want)
	}

	key := buildRPMHeader(rpmStr(rpmTagName, "gpg-pubkey"), rpmStr(rpmTagVersion, "c87f5b1a"), rpmStr(rpmTagRelease, "593863f8"),
		rpmStr(rpmTagSourceRPM, "(none)"))
	p, err = parseRPMHeader(key)
	if err != nil {
		t.Fatal(err)
	}
	if !p.GpgPubkey || p.Arch != "" || p.Epoch != nil || p.SourceName != "" {
		t.Errorf("gpg-pubkey: %v", p)
	}

	for name, blob := range map[string][]byte{
		"empty":             nil,
		"no entries":        {0, 0, 0, 0, 0, 0, 0, 0},
		"short":             full[:len(full)-1],
		"long":              append(append([]byte(nil), full...), 0),
		"no name":           buildRPMHeader(rpmStr(rpmTagVersion, "1")),
		"unterminated name": buildRPMHeader(rpmEntry{rpmTagName, rpmTypeString, []byte("abc"), 1}),
		"epoch as string":   buildRPMHeader(rpmStr(rpmTagName, "a"), rpmStr(rpmTagEpoch, "1")),
		"short epoch":       buildRPMHeader(rpmStr(rpmTagName, "a"), rpmEntry{rpmTagEpoch, rpmTypeInt32, []byte{0, 1}, 1}),
		"name as int":       buildRPMHeader(rpmI32(rpmTagName, 7)),
		"bad type":          buildRPMHeader(rpmStr(rpmTagName, "a"), rpmEntry{5000, 42, []byte{1}, 1}),
		"huge count":        binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 0x10000), 0),
	} {
		if _, err := parseRPMHeader(blob); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// An offset past the data store.
	bad := buildRPMHeader(rpmStr(rpmTagName, "a"))
	binary.BigEndian.PutUint32(bad[16:], 100)
	if _, err := parseRPMHeader(bad); err == nil {
		t.Error("offset past the data store accepted")
	}
}

func TestSplitSourceRPM(t *testing.T) {
	for in, want := range map[string][2]string{
		"glibc-2.26-32.amzn2.0.1.src.rpm": {"glibc", "2.26-32.amzn2.0.1"},
		"python-pip-9.0.3-8.el7.src.rpm":  {"python-pip", "9.0.3-8.el7"},
		"foo-1-2.nosrc.rpm":               {"foo", "1-2"},
		"weird.src.rpm":                   {"weird", ""},
		"a-1.src.rpm":                     {"a-1", ""},
	} {
		n, v := splitSourceRPM(in)
		if n != want[0] || v != want[1] {
			t.Errorf("%s: %q %q, want %q", in, n, v, want)
		}
	}
}

// buildNDB writes blobs into an ndb Packages.db the way rpm's rpmpkg.c
// lays them out: one slot page, blobs from block 256 on, each with its
// head, padding and tail (with the Adler-32 rpm computes).
func buildNDB(blobs ...[]byte) []byte {
	le := binary.LittleEndian
	out := make([]byte, ndbPageSize)
	le.PutUint32(out[0:], ndbMagic)
	le.PutUint32(out[12:], 1)
	le.PutUint32(out[16:], uint32(len(blobs)+1))
	for o := ndbHeaderSize; o < ndbPageSize; o += ndbSlotSize {
		le.PutUint32(out[o:], ndbSlotMagic)
	}
	for i, blob := range blobs {
		idx := uint32(i + 1)
		blkcnt := (ndbBlobHeadSize + len(blob) + ndbBlobTailSize + ndbBlkSize - 1) / ndbBlkSize
		blkoff := len(out) / ndbBlkSize
		slot := out[ndbHeaderSize+i*ndbSlotSize:]
		le.PutUint32(slot[4:], idx)
		le.PutUint32(slot[8:], uint32(blkoff))
		le.PutUint32(slot[12:], uint32(blkcnt))
		b := make([]byte, blkcnt*ndbBlkSize)
		le.PutUint32(b[0:], ndbBlobHeadMagic)
		le.PutUint32(b[4:], idx)
		le.PutUint32(b[12:], uint32(len(blob)))
		copy(b[ndbBlobHeadSize:], blob)
		tail := b[len(b)-ndbBlobTailSize:]
		le.PutUint32(tail[4:], uint32(len(blob)))
		le.PutUint32(tail[8:], ndbBlobTailMagic)
		out = append(out, b...)
	}
	return out
}

func helloHeader(t testing.TB) []byte {
	b, err := os.ReadFile("testdata/rpm/hello-header.bin")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReadNDB(t *testing.T) {
	hello := helloHeader(t)
	other := buildRPMHeader(rpmStr(rpmTagName, "other"), rpmStr(rpmTagVersion, "1"))
	db := buildNDB(hello, other)
	var got [][]byte
	err := readNDB(bytes.NewReader(db), int64(len(db)), func(_ uint32, b []byte) error {
		got = append(got, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !bytes.Equal(got[0], hello) || !bytes.Equal(got[1], other) {
		t.Fatalf("read %d blobs", len(got))
	}

	le := binary.LittleEndian
	for name, damage := range map[string]func(b []byte) []byte{
		"truncated":       func(b []byte) []byte { return b[:len(b)-16] },
		"odd size":        func(b []byte) []byte { return b[:len(b)-3] },
		"bad magic":       func(b []byte) []byte { b[0] = 'X'; return b },
		"bad version":     func(b []byte) []byte { le.PutUint32(b[4:], 9); return b },
		"bad slot magic":  func(b []byte) []byte { b[ndbHeaderSize+ndbSlotSize*5] = 0; return b },
		"slot in header":  func(b []byte) []byte { le.PutUint32(b[ndbHeaderSize+8:], 1); return b },
		"zero pkgidx":     func(b []byte) []byte { le.PutUint32(b[ndbHeaderSize+4:], 0); return b },
		"blob mismatch":   func(b []byte) []byte { le.PutUint32(b[ndbPageSize+4:], 7); return b },
		"blob length":     func(b []byte) []byte { le.PutUint32(b[ndbPageSize+12:], 5); return b },
		"tail magic":      func(b []byte) []byte { b[len(b)-1] = 0; return b },
		"slot pages huge": func(b []byte) []byte { le.PutUint32(b[12:], 1<<30); return b },
	} {
		b := damage(append([]byte(nil), db...))
		if err := readNDB(bytes.NewReader(b), int64(len(b)), func(uint32, []byte) error { return nil }); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestReadBDBHash(t *testing.T) {
	db, err := os.ReadFile("testdata/rpm/hello-bdb-Packages")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	err = readBDBHash(bytes.NewReader(db), int64(len(db)), func(key uint32, v []byte) error {
		n++
		if key == 0 || !bytes.Equal(v, helloHeader(t)) {
			t.Errorf("record %d: %d bytes", key, len(v))
		}
		return nil
	})
	if err != nil || n != 1 {
		t.Fatalf("%d records, %v", n, err)
	}
	for name, damage := range map[string]func(b []byte) []byte{
		"empty":        func(b []byte) []byte { return nil },
		"truncated":    func(b []byte) []byte { return b[:len(b)/2] },
		"bad magic":    func(b []byte) []byte { b[12] ^= 0xff; return b },
		"bad pagesize": func(b []byte) []byte { b[20], b[21] = 0x01, 0x03; return b },
		"not hashmeta": func(b []byte) []byte { b[25] = 9; return b },
	} {
		b := damage(append([]byte(nil), db...))
		if err := readBDBHash(bytes.NewReader(b), int64(len(b)), func(uint32, []byte) error { return nil }); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// TestRPMSqliteWithPendingWAL writes a package into a copy of the AL2023
// database through SQLite's write-ahead log and keeps the writer open, so
// the newest row lives only in rpmdb.sqlite-wal: the reader must see it
// (it copies database and log) and leave both host files as they were.
func TestRPMSqliteWithPendingWAL(t *testing.T) {
	root := testutil.CopyFixtureRoot(t, "rpm-amazonlinux2023-plain")
	dbPath := filepath.Join(root, "var/lib/rpm/rpmdb.sqlite")
	w, err := sql.Open("sqlite", "file:"+dbPath+"?_pragma=journal_mode(WAL)&_pragma=wal_autocheckpoint(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.SetMaxOpenConns(1)
	extra := buildRPMHeader(rpmStr(rpmTagName, "wal-only"), rpmStr(rpmTagVersion, "1.0"), rpmStr(rpmTagRelease, "1"), rpmStr(rpmTagArch, "noarch"))
	if _, err := w.Exec("INSERT INTO Packages (blob) VALUES (?)", extra); err != nil {
		t.Fatal(err)
	}
	walInfo, err := os.Stat(dbPath + "-wal")
	if err != nil || walInfo.Size() == 0 {
		t.Fatalf("no pending write-ahead log: %v", err)
	}
	before := treeDigest(t, filepath.Join(root, "var/lib/rpm"))
	tempBefore := rpmTempDirs(t)

	r, err := hostfs.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	inv, err := ReadPackages(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range inv.Packages {
		found = found || p.Name == "wal-only"
	}
	if len(inv.Packages) != 104 || !found {
		t.Errorf("%d packages, wal-only seen: %v", len(inv.Packages), found)
	}
	if after := treeDigest(t, filepath.Join(root, "var/lib/rpm")); after != before {
		t.Error("reading changed the host's rpmdb files")
	}
	for _, d := range rpmTempDirs(t) {
		if !slices.Contains(tempBefore, d) {
			t.Errorf("temporary copy %s left behind", d)
		}
	}
}

func rpmTempDirs(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(os.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "nodeward-rpmdb-") {
			dirs = append(dirs, e.Name())
		}
	}
	return dirs
}

func FuzzParseRPMHeader(f *testing.F) {
	f.Add(helloHeader(f))
	f.Add(buildRPMHeader(rpmStr(rpmTagName, "a"), rpmI32(rpmTagEpoch, 1), rpmI32(rpmTagInstallTime, 2), rpmStr(rpmTagSourceRPM, "a-1-2.src.rpm")))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseRPMHeader(b)
		if err == nil && p.Name == "" {
			t.Fatal("accepted a header without a name")
		}
	})
}

// bdbRecord is one key/value for buildBDB; overflow puts the value on a
// chain of overflow pages instead of inline.
type bdbRecord struct {
	key      uint32
	value    []byte
	overflow bool
}

// buildBDB lays records out as a little-endian Berkeley DB hash database
// with small pages: the metadata page, one hash page holding every key
// (and the inline values), then each overflow value's page chain.
func buildBDB(pageSize int, recs ...bdbRecord) []byte {
	le := binary.LittleEndian
	pages := [][]byte{make([]byte, pageSize), make([]byte, pageSize)}
	hash := pages[1]
	end := pageSize
	var inp []int
	put := func(item []byte) {
		end -= len(item)
		copy(hash[end:], item)
		inp = append(inp, end)
	}
	for _, r := range recs {
		put(append([]byte{bdbItemKeyData}, le.AppendUint32(nil, r.key)...))
		if !r.overflow {
			put(append([]byte{bdbItemKeyData}, r.value...))
			continue
		}
		first := len(pages)
		for off := 0; off < len(r.value); off += pageSize - bdbPageHeader {
			pg := make([]byte, pageSize)
			n := copy(pg[bdbPageHeader:], r.value[off:])
			le.PutUint32(pg[8:], uint32(len(pages)))
			if off+n < len(r.value) {
				le.PutUint32(pg[16:], uint32(len(pages)+1))
			}
			le.PutUint16(pg[22:], uint16(n))
			pg[25] = bdbPageOverflow
			pages = append(pages, pg)
		}
		ref := []byte{bdbItemOffPage, 0, 0, 0}
		ref = le.AppendUint32(ref, uint32(first))
		put(le.AppendUint32(ref, uint32(len(r.value))))
	}
	le.PutUint32(hash[8:], 1)
	le.PutUint16(hash[20:], uint16(len(inp)))
	le.PutUint16(hash[22:], uint16(end))
	hash[25] = bdbPageHash
	for i, o := range inp {
		le.PutUint16(hash[bdbPageHeader+2*i:], uint16(o))
	}
	meta := pages[0]
	le.PutUint32(meta[12:], bdbHashMagic)
	le.PutUint32(meta[16:], 9)
	le.PutUint32(meta[20:], uint32(pageSize))
	meta[25] = bdbPageHashMeta
	le.PutUint32(meta[32:], uint32(len(pages)-1))
	var out []byte
	for _, pg := range pages {
		out = append(out, pg...)
	}
	return out
}

func smallBDB() ([]byte, [][]byte) {
	inline := buildRPMHeader(rpmStr(rpmTagName, "inline"), rpmStr(rpmTagVersion, "1"))
	chained := buildRPMHeader(rpmStr(rpmTagName, "chained"), rpmStr(rpmTagVersion, strings.Repeat("9", 700)))
	return buildBDB(512,
		bdbRecord{key: 0, value: []byte{3, 0, 0, 0}},
		bdbRecord{key: 1, value: inline},
		bdbRecord{key: 2, value: chained, overflow: true},
	), [][]byte{inline, chained}
}

func TestReadBDBHashCrafted(t *testing.T) {
	db, want := smallBDB()
	var got [][]byte
	err := readBDBHash(bytes.NewReader(db), int64(len(db)), func(key uint32, v []byte) error {
		got = append(got, v)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !bytes.Equal(got[0], want[0]) || !bytes.Equal(got[1], want[1]) {
		t.Fatalf("read %d values", len(got))
	}
	// A chain that loops back on itself is an error, not a hang.
	loop := append([]byte(nil), db...)
	binary.LittleEndian.PutUint32(loop[3*512+16:], 2)
	binary.LittleEndian.PutUint16(loop[3*512+22:], 1)
	if err := readBDBHash(bytes.NewReader(loop), int64(len(loop)), func(uint32, []byte) error { return nil }); err == nil {
		t.Error("looping overflow chain accepted")
	}
}

func FuzzReadBDBHash(f *testing.F) {
	db, _ := smallBDB()
	f.Add(db)
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = readBDBHash(bytes.NewReader(b), int64(len(b)), func(_ uint32, v []byte) error {
			if len(v) > len(b) {
				t.Fatalf("value of %d bytes from a %d-byte file", len(v), len(b))
			}
			_, _ = parseRPMHeader(v)
			return nil
		})
	})
}

func FuzzReadNDB(f *testing.F) {
	f.Add(buildNDB(helloHeader(f)))
	f.Add(buildNDB(helloHeader(f), buildRPMHeader(rpmStr(rpmTagName, "b"))))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = readNDB(bytes.NewReader(b), int64(len(b)), func(_ uint32, v []byte) error {
			if len(v) > len(b) {
				t.Fatalf("blob of %d bytes from a %d-byte file", len(v), len(b))
			}
			_, _ = parseRPMHeader(v)
			return nil
		})
	})
}

// TestRPMSqliteMidTransaction holds a write transaction open on a copy of
// the AL2023 database, with a cache so small that SQLite spills changed
// pages into the database file before commit: the file alone is then
// inconsistent, and only its rollback journal says what is committed. The
// reader must see exactly the committed 103 packages.
func TestRPMSqliteMidTransaction(t *testing.T) {
	root := testutil.CopyFixtureRoot(t, "rpm-amazonlinux2023-plain")
	dbPath := filepath.Join(root, "var/lib/rpm/rpmdb.sqlite")
	w, err := sql.Open("sqlite", "file:"+dbPath+"?_pragma=journal_mode(DELETE)&_pragma=cache_size(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.SetMaxOpenConns(1)
	tx, err := w.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.Exec("DELETE FROM Packages WHERE hnum % 2 = 0"); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		blob := buildRPMHeader(rpmStr(rpmTagName, "uncommitted-"+strings.Repeat("x", i)), rpmStr(rpmTagVersion, strings.Repeat("1", 4000)))
		if _, err := tx.Exec("INSERT INTO Packages (blob) VALUES (?)", blob); err != nil {
			t.Fatal(err)
		}
	}
	if fi, err := os.Stat(dbPath + "-journal"); err != nil || fi.Size() == 0 {
		t.Fatalf("no rollback journal during the transaction: %v", err)
	}
	r, err := hostfs.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	inv, err := ReadPackages(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range inv.Packages {
		if strings.HasPrefix(p.Name, "uncommitted-") {
			t.Fatalf("saw an uncommitted package")
		}
	}
	if len(inv.Packages) != 103 {
		t.Errorf("%d packages, want the 103 committed ones", len(inv.Packages))
	}
}
