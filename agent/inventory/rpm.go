package inventory

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
	_ "modernc.org/sqlite" // pure-Go SQLite for rpmdb.sqlite
)

// rpm header tags the inventory reads (rpmtag.h).
const (
	rpmTagName        = 1000
	rpmTagVersion     = 1001
	rpmTagRelease     = 1002
	rpmTagEpoch       = 1003
	rpmTagInstallTime = 1008
	rpmTagArch        = 1022
	rpmTagSourceRPM   = 1044
)

// rpm header data types.
const (
	rpmTypeNull        = 0
	rpmTypeChar        = 1
	rpmTypeInt8        = 2
	rpmTypeInt16       = 3
	rpmTypeInt32       = 4
	rpmTypeInt64       = 5
	rpmTypeString      = 6
	rpmTypeBin         = 7
	rpmTypeStringArray = 8
	rpmTypeI18NString  = 9
)

const (
	// maxRPMHeaderTags and maxRPMHeaderData are rpm's own bounds
	// (hdrchkTags, hdrchkData).
	maxRPMHeaderTags = 0xffff
	maxRPMHeaderData = 256 << 20
	// maxRPMDBFile bounds a database file read into memory or copied.
	maxRPMDBFile = 2 << 30
)

// rpmFormat is one of the three rpmdb backends.
type rpmFormat struct {
	name string // "sqlite", "ndb", "bdb"
	file string
}

// rpmFormats in the order rpm itself prefers them when several files are
// left in one directory after a backend migration: newest first.
var rpmFormats = []rpmFormat{{"sqlite", "rpmdb.sqlite"}, {"ndb", "Packages.db"}, {"bdb", "Packages"}}

// rpmDirs are where distributions keep the rpmdb: the classic place, the
// sysimage one (openSUSE, Fedora 36+; /var/lib/rpm is then a link) and
// the image-based one (rpm-ostree).
var rpmDirs = []string{"var/lib/rpm", "usr/lib/sysimage/rpm", "usr/share/rpm"}

// parseRPMHeader turns one header blob, as rpmdb stores it (no lead, no
// magic: index count, data length, index entries, data store), into a
// package. It checks every bound before reading, as rpm's hdrblobInit and
// hdrblobVerifyInfo do.
func parseRPMHeader(blob []byte) (*nodewardv1.Package, error) {
	if len(blob) < 8 {
		return nil, fmt.Errorf("header of %d bytes is shorter than its preamble", len(blob))
	}
	il := binary.BigEndian.Uint32(blob[0:4])
	dl := binary.BigEndian.Uint32(blob[4:8])
	if il < 1 || il > maxRPMHeaderTags {
		return nil, fmt.Errorf("header tag count %d out of range", il)
	}
	if dl > maxRPMHeaderData {
		return nil, fmt.Errorf("header data length %d out of range", dl)
	}
	want := 8 + uint64(il)*16 + uint64(dl)
	if uint64(len(blob)) != want {
		return nil, fmt.Errorf("header blob is %d bytes, its preamble says %d", len(blob), want)
	}
	index := blob[8 : 8+int(il)*16]
	data := blob[8+int(il)*16:]
	p := &nodewardv1.Package{Manager: nodewardv1.PackageManager_PACKAGE_MANAGER_RPM, State: "installed"}
	var sourceRPM string
	for i := 0; i < int(il); i++ {
		e := index[i*16 : i*16+16]
		tag := int32(binary.BigEndian.Uint32(e[0:4]))
		typ := binary.BigEndian.Uint32(e[4:8])
		off := int32(binary.BigEndian.Uint32(e[8:12]))
		count := binary.BigEndian.Uint32(e[12:16])
		if typ > rpmTypeI18NString {
			return nil, fmt.Errorf("tag %d: invalid type %d", tag, typ)
		}
		if off < 0 || (int64(off) >= int64(len(data)) && typ != rpmTypeNull && count != 0) {
			return nil, fmt.Errorf("tag %d: offset %d outside the %d-byte data store", tag, off, len(data))
		}
		var err error
		switch tag {
		case rpmTagName:
			p.Name, err = rpmString(data, off, typ)
		case rpmTagVersion:
			p.Version, err = rpmString(data, off, typ)
		case rpmTagRelease:
			p.Release, err = rpmString(data, off, typ)
		case rpmTagArch:
			p.Arch, err = rpmString(data, off, typ)
		case rpmTagSourceRPM:
			sourceRPM, err = rpmString(data, off, typ)
		case rpmTagEpoch:
			var v uint32
			if v, err = rpmInt32(data, off, typ, count); err == nil {
				p.Epoch = &v
			}
		case rpmTagInstallTime:
			var v uint32
			if v, err = rpmInt32(data, off, typ, count); err == nil {
				p.InstallTime = timestamppb.New(time.Unix(int64(v), 0))
				p.InstallTimeSource = nodewardv1.InstallTimeSource_INSTALL_TIME_SOURCE_RPM_HEADER
			}
		}
		if err != nil {
			return nil, fmt.Errorf("tag %d: %w", tag, err)
		}
	}
	if p.Name == "" {
		return nil, errors.New("header has no NAME")
	}
	p.GpgPubkey = p.Name == "gpg-pubkey"
	if sourceRPM != "" && sourceRPM != "(none)" {
		p.SourceName, p.SourceVersion = splitSourceRPM(sourceRPM)
	}
	return p, nil
}

// rpmString reads a NUL-terminated string entry (STRING, or the first of an
// I18NSTRING / STRING_ARRAY).
func rpmString(data []byte, off int32, typ uint32) (string, error) {
	if typ != rpmTypeString && typ != rpmTypeI18NString && typ != rpmTypeStringArray {
		return "", fmt.Errorf("type %d where a string was expected", typ)
	}
	if off < 0 || int64(off) >= int64(len(data)) {
		return "", fmt.Errorf("string at offset %d outside the %d-byte data store", off, len(data))
	}
	s := data[off:]
	n := bytes.IndexByte(s, 0)
	if n < 0 {
		return "", errors.New("unterminated string")
	}
	return string(s[:n]), nil
}

// rpmInt32 reads the first value of an INT32 entry.
func rpmInt32(data []byte, off int32, typ, count uint32) (uint32, error) {
	if typ != rpmTypeInt32 {
		return 0, fmt.Errorf("type %d where INT32 was expected", typ)
	}
	if count < 1 || off < 0 || off%4 != 0 || int64(off)+4 > int64(len(data)) {
		return 0, fmt.Errorf("INT32 at offset %d (count %d) out of bounds", off, count)
	}
	return binary.BigEndian.Uint32(data[off:]), nil
}

// splitSourceRPM turns "glibc-2.26-32.amzn2.0.1.src.rpm" into "glibc" and
// "2.26-32.amzn2.0.1": name-version-release, split from the right.
func splitSourceRPM(s string) (name, version string) {
	s = strings.TrimSuffix(strings.TrimSuffix(s, ".rpm"), ".src")
	s = strings.TrimSuffix(s, ".nosrc")
	r := strings.LastIndexByte(s, '-')
	if r <= 0 {
		return s, ""
	}
	v := strings.LastIndexByte(s[:r], '-')
	if v <= 0 {
		return s, ""
	}
	return s[:v], s[v+1:]
}

// rpmBlobs collects header blobs and the per-header errors rpm itself
// would print and skip ("rpmdbNextIterator: skipping h#").
type rpmBlobs struct {
	pkgs    []*nodewardv1.Package
	skipped []string
}

func (b *rpmBlobs) add(id uint64, blob []byte) {
	p, err := parseRPMHeader(blob)
	if err != nil {
		b.skipped = append(b.skipped, fmt.Sprintf("h#%d: %v", id, err))
		return
	}
	b.pkgs = append(b.pkgs, p)
}

func (b *rpmBlobs) err() error {
	switch n := len(b.skipped); {
	case n == 0:
		return nil
	case n <= 3:
		return fmt.Errorf("skipped %d bad headers: %s", n, strings.Join(b.skipped, "; "))
	default:
		return fmt.Errorf("skipped %d bad headers: %s; and %d more", n, strings.Join(b.skipped[:3], "; "), n-3)
	}
}

// readRPM reads one rpmdb file in the given format.
func readRPM(ctx context.Context, root *hostfs.Root, path, format string) ([]*nodewardv1.Package, error) {
	var (
		blobs rpmBlobs
		err   error
	)
	switch format {
	case "sqlite":
		err = readRPMSqlite(ctx, root, path, blobs.add)
	case "bdb", "ndb":
		var f *os.File
		if f, err = root.Open(path); err != nil {
			return nil, err
		}
		defer f.Close()
		var fi fs.FileInfo
		if fi, err = f.Stat(); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if format == "bdb" {
			err = readBDBHash(f, fi.Size(), func(key uint32, v []byte) error {
				blobs.add(uint64(key), v)
				return ctx.Err()
			})
		} else {
			err = readNDB(f, fi.Size(), func(idx uint32, v []byte) error {
				blobs.add(uint64(idx), v)
				return ctx.Err()
			})
		}
	default:
		return nil, fmt.Errorf("unknown rpmdb format %q", format)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := blobs.err(); err != nil {
		return blobs.pkgs, fmt.Errorf("%s: %w", path, err)
	}
	return blobs.pkgs, nil
}

// readRPMSqlite reads the Packages table of rpmdb.sqlite without locking
// or writing the host's database. With nothing pending the file is opened
// in place as immutable (no locks, no journal, no -shm); when a -wal holds
// transactions not yet checkpointed (or a hot -journal is left), the
// database and that file are copied to a private temporary directory and
// read from there, so the newest packages are seen and the host's files
// stay untouched.
func readRPMSqlite(ctx context.Context, root *hostfs.Root, path string, add func(uint64, []byte)) error {
	dbPath, err := root.RealPath(path)
	if err != nil {
		return err
	}
	query := "mode=ro&immutable=1"
	// A write-ahead log not yet checkpointed, or a rollback journal left
	// by an interrupted transaction, changes what the database says: copy
	// it with the database and let SQLite apply it to the copy.
	var pending []string
	for _, suffix := range []string{"-wal", "-journal"} {
		if fi, err := root.Stat(path + suffix); err == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
			pending = append(pending, suffix)
		}
	}
	if len(pending) > 0 {
		dir, err := os.MkdirTemp("", "nodeward-rpmdb-")
		if err != nil {
			return fmt.Errorf("copy with its %s: %w", pending[0], err)
		}
		defer os.RemoveAll(dir)
		dbPath = filepath.Join(dir, "rpmdb.sqlite")
		if err := copyFromRoot(root, path, dbPath); err != nil {
			return err
		}
		for _, suffix := range pending {
			if err := copyFromRoot(root, path+suffix, dbPath+suffix); err != nil {
				return err
			}
		}
		query = ""
	}
	dsn := "file:" + sqliteURIPath(dbPath)
	if query != "" {
		dsn += "?" + query
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	rows, err := db.QueryContext(ctx, "SELECT hnum, blob FROM Packages")
	if err != nil {
		return fmt.Errorf("query Packages: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			hnum int64
			blob []byte
		)
		if err := rows.Scan(&hnum, &blob); err != nil {
			return fmt.Errorf("read Packages row: %w", err)
		}
		if hnum <= 0 {
			continue
		}
		add(uint64(hnum), blob)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read Packages: %w", err)
	}
	return nil
}

// sqliteURIPath escapes the characters that end or escape a path in an
// SQLite URI filename.
func sqliteURIPath(p string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(p)
}

// copyFromRoot copies a host file into the agent's own filesystem.
func copyFromRoot(root *hostfs.Root, src, dst string) error {
	in, err := root.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	n, err := io.Copy(out, io.LimitReader(in, maxRPMDBFile+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if n > maxRPMDBFile {
		return fmt.Errorf("copy %s: %w of %d bytes", src, hostfs.ErrTooLarge, int64(maxRPMDBFile))
	}
	return nil
}
