//go:build cgo

package sqlite

/*
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// SQLite's C API, as linked in by github.com/mattn/go-sqlite3: only what
// the event writer calls.
typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;
int sqlite3_open_v2(const char *filename, sqlite3 **db, int flags, const char *vfs);
int sqlite3_close_v2(sqlite3 *db);
int sqlite3_exec(sqlite3 *db, const char *sql, void *callback, void *arg, char **errmsg);
int sqlite3_prepare_v2(sqlite3 *db, const char *sql, int n, sqlite3_stmt **stmt, const char **tail);
int sqlite3_finalize(sqlite3_stmt *stmt);
int sqlite3_step(sqlite3_stmt *stmt);
int sqlite3_reset(sqlite3_stmt *stmt);
int sqlite3_clear_bindings(sqlite3_stmt *stmt);
int sqlite3_bind_int64(sqlite3_stmt *stmt, int i, int64_t v);
int sqlite3_bind_null(sqlite3_stmt *stmt, int i);
int sqlite3_bind_text(sqlite3_stmt *stmt, int i, const char *v, int n, void (*destructor)(void *));
int sqlite3_bind_blob(sqlite3_stmt *stmt, int i, const void *v, int n, void (*destructor)(void *));
int sqlite3_changes(sqlite3 *db);
int sqlite3_busy_handler(sqlite3 *db, int (*handler)(void *, int), void *arg);
int sqlite3_wal_checkpoint_v2(sqlite3 *db, const char *schema, int mode, int *log, int *ckpt);
const char *sqlite3_errmsg(sqlite3 *db);
void sqlite3_free(void *p);

// SQLite's VFS interface (sqlite3.h), for the WAL write buffer below.
typedef long long sqlite3_int64;
typedef struct sqlite3_file sqlite3_file;
typedef struct sqlite3_io_methods sqlite3_io_methods;
struct sqlite3_file { const sqlite3_io_methods *pMethods; };
struct sqlite3_io_methods {
	int iVersion;
	int (*xClose)(sqlite3_file *);
	int (*xRead)(sqlite3_file *, void *, int, sqlite3_int64);
	int (*xWrite)(sqlite3_file *, const void *, int, sqlite3_int64);
	int (*xTruncate)(sqlite3_file *, sqlite3_int64);
	int (*xSync)(sqlite3_file *, int);
	int (*xFileSize)(sqlite3_file *, sqlite3_int64 *);
	int (*xLock)(sqlite3_file *, int);
	int (*xUnlock)(sqlite3_file *, int);
	int (*xCheckReservedLock)(sqlite3_file *, int *);
	int (*xFileControl)(sqlite3_file *, int, void *);
	int (*xSectorSize)(sqlite3_file *);
	int (*xDeviceCharacteristics)(sqlite3_file *);
	int (*xShmMap)(sqlite3_file *, int, int, int, void volatile **);
	int (*xShmLock)(sqlite3_file *, int, int, int);
	void (*xShmBarrier)(sqlite3_file *);
	int (*xShmUnmap)(sqlite3_file *, int);
	int (*xFetch)(sqlite3_file *, sqlite3_int64, int, void **);
	int (*xUnfetch)(sqlite3_file *, sqlite3_int64, void *);
};
typedef struct sqlite3_vfs sqlite3_vfs;
struct sqlite3_vfs {
	int iVersion;
	int szOsFile;
	int mxPathname;
	sqlite3_vfs *pNext;
	const char *zName;
	void *pAppData;
	int (*xOpen)(sqlite3_vfs *, const char *, sqlite3_file *, int, int *);
	void *rest[15]; // xDelete..xNextSystemCall: copied, not called here
};
sqlite3_vfs *sqlite3_vfs_find(const char *name);
int sqlite3_vfs_register(sqlite3_vfs *vfs, int makeDefault);

enum {
	NW_OK = 0, NW_DONE = 101, NW_NOMEM = 7, NW_CANTOPEN = 14, NW_OPEN_WAL = 0x80000,
	NW_OPEN_READWRITE = 0x2, NW_OPEN_NOMUTEX = 0x8000, NW_CHECKPOINT_RESTART = 2,
	NW_REQUEST_INTS = 5, // node offset, node length, seq, received_ns, events
	NW_EVENT_INTS = 20,  // idx, time_ns, uid, has uid, then 8 texts as offset, length
};

// The event writer's WAL writes are buffered: SQLite writes each frame of
// a commit as two pwrite calls (its header, then the page), some 1,800 per
// commit group at 50,000 events/s, and on virtual machines a system call
// costs microseconds: they were a third of the writer's time. Frames are
// appended in order, so the buffer takes every write that continues it and
// reaches the file before anything could read it back: before a sync (each
// commit syncs, before readers can see its frames), a read, a size or
// truncate, a close. A failed deferred write fails that sync, and so the
// commit. Only the event writer's connection opens files through it.
//
// A commit's sync of the WAL is deferred, too, while nw_defer_sync is set
// on the writer's thread (in nw_write_group): the sync still writes out
// the buffer, and the store's flusher makes it durable (fdatasync) before
// the group's acks, while the writer goes on. Syncs of a new WAL header
// (after a rewind) and all checkpoint syncs stay where SQLite puts them,
// as the order of what reaches the disk depends on them.
typedef struct {
	sqlite3_file base;
	sqlite3_file *real;   // the file as the default VFS opened it, after this struct
	char *buf;            // WAL files only
	int len;
	sqlite3_int64 off;    // file offset of buf[0]
	int header;           // the WAL header was written since the last sync
} nw_file;
static __thread int nw_defer_sync;

// The default VFS writes less than 128 KiB per call.
enum { NW_WAL_BUFFER = 120 << 10 };
static sqlite3_vfs nw_vfs, *nw_base;

// nw_flush writes what the buffer holds; on failure it keeps it, so the
// next flush tries again and a sync cannot succeed without it.
static int nw_flush(nw_file *f) {
	if (f->len == 0) return NW_OK;
	int rc = f->real->pMethods->xWrite(f->real, f->buf, f->len, f->off);
	if (rc == NW_OK) f->len = 0;
	return rc;
}

static int nw_close(sqlite3_file *p) {
	nw_file *f = (nw_file *)p;
	int rc = nw_flush(f);
	int rc2 = f->real->pMethods->xClose(f->real);
	free(f->buf);
	f->buf = NULL;
	return rc != NW_OK ? rc : rc2;
}

static int nw_write(sqlite3_file *p, const void *data, int n, sqlite3_int64 off) {
	nw_file *f = (nw_file *)p;
	if (f->buf == NULL) return f->real->pMethods->xWrite(f->real, data, n, off);
	if (f->len > 0 && (off != f->off + f->len || f->len + n > NW_WAL_BUFFER)) {
		int rc = nw_flush(f);
		if (rc != NW_OK) return rc;
	}
	if (off == 0) f->header = 1;
	if (n > NW_WAL_BUFFER) return f->real->pMethods->xWrite(f->real, data, n, off);
	if (f->len == 0) f->off = off;
	memcpy(f->buf + f->len, data, n);
	f->len += n;
	return NW_OK;
}

#define NW_FLUSH_FIRST(f) do { int rc_ = nw_flush((nw_file *)(f)); if (rc_ != NW_OK) return rc_; } while (0)
#define NW_REAL(p) (((nw_file *)(p))->real)
static int nw_read(sqlite3_file *p, void *d, int n, sqlite3_int64 o) { NW_FLUSH_FIRST(p); return NW_REAL(p)->pMethods->xRead(NW_REAL(p), d, n, o); }
static int nw_truncate(sqlite3_file *p, sqlite3_int64 n) { NW_FLUSH_FIRST(p); return NW_REAL(p)->pMethods->xTruncate(NW_REAL(p), n); }
static int nw_sync(sqlite3_file *p, int fl) {
	NW_FLUSH_FIRST(p);
	nw_file *f = (nw_file *)p;
	if (f->buf != NULL && nw_defer_sync && !f->header) return NW_OK;
	f->header = 0;
	return f->real->pMethods->xSync(f->real, fl);
}
static int nw_size(sqlite3_file *p, sqlite3_int64 *n) { NW_FLUSH_FIRST(p); return NW_REAL(p)->pMethods->xFileSize(NW_REAL(p), n); }
static int nw_lock(sqlite3_file *p, int l) { return NW_REAL(p)->pMethods->xLock(NW_REAL(p), l); }
static int nw_unlock(sqlite3_file *p, int l) { return NW_REAL(p)->pMethods->xUnlock(NW_REAL(p), l); }
static int nw_reserved(sqlite3_file *p, int *r) { return NW_REAL(p)->pMethods->xCheckReservedLock(NW_REAL(p), r); }
static int nw_control(sqlite3_file *p, int op, void *a) { return NW_REAL(p)->pMethods->xFileControl(NW_REAL(p), op, a); }
static int nw_sector(sqlite3_file *p) { return NW_REAL(p)->pMethods->xSectorSize(NW_REAL(p)); }
static int nw_device(sqlite3_file *p) { return NW_REAL(p)->pMethods->xDeviceCharacteristics(NW_REAL(p)); }
static int nw_shm_map(sqlite3_file *p, int pg, int sz, int ext, void volatile **pp) { return NW_REAL(p)->pMethods->xShmMap(NW_REAL(p), pg, sz, ext, pp); }
static int nw_shm_lock(sqlite3_file *p, int o, int n, int fl) { return NW_REAL(p)->pMethods->xShmLock(NW_REAL(p), o, n, fl); }
static int nw_shm_unmap(sqlite3_file *p, int del) { return NW_REAL(p)->pMethods->xShmUnmap(NW_REAL(p), del); }
static int nw_fetch(sqlite3_file *p, sqlite3_int64 o, int n, void **pp) { return NW_REAL(p)->pMethods->xFetch(NW_REAL(p), o, n, pp); }
static int nw_unfetch(sqlite3_file *p, sqlite3_int64 o, void *d) { return NW_REAL(p)->pMethods->xUnfetch(NW_REAL(p), o, d); }
static void nw_shm_barrier(sqlite3_file *p) { NW_REAL(p)->pMethods->xShmBarrier(NW_REAL(p)); }

static const sqlite3_io_methods nw_io = {
	3, nw_close, nw_read, nw_write, nw_truncate, nw_sync, nw_size, nw_lock, nw_unlock, nw_reserved, nw_control,
	nw_sector, nw_device, nw_shm_map, nw_shm_lock, nw_shm_barrier, nw_shm_unmap, nw_fetch, nw_unfetch,
};

static int nw_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *p, int flags, int *outFlags) {
	nw_file *f = (nw_file *)p;
	memset(f, 0, sizeof *f);
	f->real = (sqlite3_file *)(f + 1);
	int rc = nw_base->xOpen(nw_base, name, f->real, flags, outFlags);
	if (f->real->pMethods == NULL) return rc;
	// Anything the default VFS opened is closed through these methods,
	// which forward all of version 3's.
	p->pMethods = &nw_io;
	if (rc == NW_OK && f->real->pMethods->iVersion < 3) rc = NW_CANTOPEN;
	if (rc == NW_OK && (flags & NW_OPEN_WAL)) {
		f->buf = malloc(NW_WAL_BUFFER);
		if (f->buf == NULL) rc = NW_NOMEM;
	}
	return rc;
}

// nw_vfs_register registers the buffering VFS as "nodeward-wal" over the
// default one.
static int nw_vfs_rc = NW_OK;
static pthread_once_t nw_vfs_once = PTHREAD_ONCE_INIT;
static void nw_vfs_init(void) {
	nw_base = sqlite3_vfs_find(NULL);
	if (nw_base == NULL) {
		nw_vfs_rc = NW_CANTOPEN;
		return;
	}
	nw_vfs = *nw_base;
	nw_vfs.zName = "nodeward-wal";
	nw_vfs.szOsFile = (int)sizeof(nw_file) + nw_base->szOsFile;
	nw_vfs.pNext = NULL;
	nw_vfs.xOpen = nw_open;
	nw_vfs_rc = sqlite3_vfs_register(&nw_vfs, 0);
}
static int nw_vfs_register(void) {
	pthread_once(&nw_vfs_once, nw_vfs_init);
	return nw_vfs_rc;
}

typedef struct {
	sqlite3 *db;
	sqlite3_stmt *claim, *touch, *event;
} nw_writer;

static void nw_error(sqlite3 *db, const char *what, char *err, int errlen) {
	if (err != NULL && errlen > 0) {
		snprintf(err, errlen, "%s: %s", what, db != NULL ? sqlite3_errmsg(db) : "out of memory");
	}
}

static int nw_exec(sqlite3 *db, const char *sql, char *err, int errlen) {
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	if (rc != NW_OK) nw_error(db, sql, err, errlen);
	return rc;
}

// nw_busy waits for a lock a millisecond at a time, for up to *arg tries
// (ten seconds when arg is NULL). SQLite's own handler backs off to 100 ms
// sleeps, which the writer then slept on after the lock was free.
static int nw_busy(void *arg, int count) {
	if (count >= (arg != NULL ? *(int *)arg : 10000)) return 0;
	usleep(1000);
	return 1;
}

static void nw_writer_close(nw_writer *w) {
	if (w == NULL) return;
	sqlite3_finalize(w->claim);
	sqlite3_finalize(w->touch);
	sqlite3_finalize(w->event);
	sqlite3_close_v2(w->db);
	free(w);
}

// nw_writer_open opens path and prepares the three statements; pragmas is
// one string of PRAGMA statements.
static nw_writer *nw_writer_open(const char *path, const char *pragmas, const char *claim, const char *touch,
		const char *event, char *err, int errlen) {
	nw_writer *w = calloc(1, sizeof *w);
	if (w == NULL) {
		nw_error(NULL, "open", err, errlen);
		return NULL;
	}
	int rc = nw_vfs_register();
	if (rc != NW_OK) {
		snprintf(err, errlen, "register the WAL-buffering VFS: error %d", rc);
		free(w);
		return NULL;
	}
	rc = sqlite3_open_v2(path, &w->db, NW_OPEN_READWRITE | NW_OPEN_NOMUTEX, "nodeward-wal");
	if (rc != NW_OK) {
		nw_error(w->db, "open", err, errlen);
	} else if ((rc = nw_exec(w->db, pragmas, err, errlen)) != NW_OK) {
	} else if ((rc = sqlite3_busy_handler(w->db, nw_busy, NULL)) != NW_OK) {
		nw_error(w->db, "busy handler", err, errlen);
	} else if ((rc = sqlite3_prepare_v2(w->db, claim, -1, &w->claim, NULL)) != NW_OK ||
			(rc = sqlite3_prepare_v2(w->db, touch, -1, &w->touch, NULL)) != NW_OK ||
			(rc = sqlite3_prepare_v2(w->db, event, -1, &w->event, NULL)) != NW_OK) {
		nw_error(w->db, "prepare", err, errlen);
	}
	if (rc != NW_OK) {
		nw_writer_close(w);
		return NULL;
	}
	return w;
}

static int nw_step(sqlite3 *db, sqlite3_stmt *stmt, const char *what, char *err, int errlen) {
	int rc = sqlite3_step(stmt);
	sqlite3_reset(stmt);
	if (rc != NW_DONE) {
		nw_error(db, what, err, errlen);
		return rc;
	}
	return NW_OK;
}

// nw_write_group writes a group of event batches in one transaction:
// each request's (node, sequence) claimed (claimed[i] = 0 when already
// stored or earlier in the group), its node touched, and the events of
// the claimed ones inserted. req holds NW_REQUEST_INTS per request, ev
// NW_EVENT_INTS per event in request order, texts point into data. With
// restart, it first checkpoints and rewinds the WAL, if readers let it
// within a few milliseconds: first, so that the previous group's acks
// need not wait for it. The commit's WAL sync is deferred: the caller
// makes the commit durable.
static int nw_write_group(nw_writer *w, const int64_t *req, int nreq, const int64_t *ev, const char *data,
		char *claimed, int restart, char *err, int errlen) {
	sqlite3 *db = w->db;
	if (restart) {
		int tries = 5;
		sqlite3_busy_handler(db, nw_busy, &tries);
		sqlite3_wal_checkpoint_v2(db, NULL, NW_CHECKPOINT_RESTART, NULL, NULL); // else on a later request
		sqlite3_busy_handler(db, nw_busy, NULL);
	}
	nw_defer_sync = 1;
	int rc = nw_exec(db, "BEGIN IMMEDIATE", err, errlen);
	if (rc != NW_OK) {
		nw_defer_sync = 0;
		return rc;
	}
	for (int i = 0; i < nreq && rc == NW_OK; i++, req += NW_REQUEST_INTS) {
		const char *node = data + req[0];
		int nodelen = (int)req[1];
		sqlite3_bind_text(w->claim, 1, node, nodelen, NULL);
		sqlite3_bind_int64(w->claim, 2, req[2]);
		sqlite3_bind_int64(w->claim, 3, req[3]);
		if ((rc = nw_step(db, w->claim, "claim sequence", err, errlen)) != NW_OK) break;
		claimed[i] = sqlite3_changes(db) > 0;
		if (!claimed[i]) {
			ev += req[4] * NW_EVENT_INTS;
			continue;
		}
		sqlite3_bind_text(w->touch, 1, node, nodelen, NULL);
		sqlite3_bind_int64(w->touch, 2, req[3]);
		sqlite3_bind_int64(w->touch, 3, req[2]);
		if ((rc = nw_step(db, w->touch, "touch node", err, errlen)) != NW_OK) break;
		for (int64_t j = 0; j < req[4] && rc == NW_OK; j++, ev += NW_EVENT_INTS) {
			sqlite3_stmt *s = w->event;
			sqlite3_bind_text(s, 1, node, nodelen, NULL);
			sqlite3_bind_int64(s, 2, req[2]);
			sqlite3_bind_int64(s, 3, ev[0]);
			sqlite3_bind_int64(s, 4, ev[1]);
			sqlite3_bind_int64(s, 5, req[3]);
			if (ev[3]) {
				sqlite3_bind_int64(s, 8, ev[2]);
			} else {
				sqlite3_bind_null(s, 8);
			}
			// The texts: kind and bin (columns 6, 7), then usr, pod, pod_ns,
			// container and session (9-13); the body is column 14.
			static const int cols[7] = {6, 7, 9, 10, 11, 12, 13};
			for (int k = 0; k < 7; k++) {
				sqlite3_bind_text(s, cols[k], data + ev[4 + 2 * k], (int)ev[5 + 2 * k], NULL);
			}
			sqlite3_bind_blob(s, 14, data + ev[18], (int)ev[19], NULL);
			rc = nw_step(db, s, "insert event", err, errlen);
		}
	}
	if (rc == NW_OK) rc = nw_exec(db, "COMMIT", err, errlen);
	if (rc != NW_OK) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	nw_defer_sync = 0;
	// The bound texts point into Go memory, which C must not keep.
	sqlite3_clear_bindings(w->claim);
	sqlite3_clear_bindings(w->touch);
	sqlite3_clear_bindings(w->event);
	return rc;
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nodeward/nodeward/collector/eventfilter"
	"github.com/nodeward/nodeward/collector/store"
	"github.com/nodeward/nodeward/collector/store/sqlstore"
)

// claimSQL records one batch's (node, sequence), nothing if already stored
// (the group commit's claim, one row at a time).
const claimSQL = `INSERT INTO sequences (node, seq, kind, received_ns) VALUES (?, ?, 'events', ?) ON CONFLICT DO NOTHING`

// eventWriter commits groups of event batches through a connection of its
// own, one call into SQLite's C library per group. Through database/sql
// every bound value was a call of its own (14 per event), and each of the
// writer's calls that outlasted a scheduler tick gave up its thread's turn
// and queued behind a thousand streams' goroutines to get it back: half a
// commit group's time went to waiting. Only the group commit's single
// worker calls write, one group at a time.
type eventWriter struct {
	w       *C.nw_writer
	restart atomic.Bool // rewind the WAL before the next group
	// Reused across groups: the requests' and events' numbers, the texts
	// and bodies they point into, which requests were claimed.
	req, ev []int64
	data    []byte
	claimed []byte
}

func openEventWriter(path string, pragmas []string) (*eventWriter, error) {
	var prag strings.Builder
	for _, p := range pragmas {
		prag.WriteString("PRAGMA " + p + ";")
	}
	cstr := func(s string) *C.char { return C.CString(s) }
	args := []*C.char{cstr(path), cstr(prag.String()), cstr(claimSQL), cstr(dialect.TouchNodeSQL()), cstr(dialect.InsertEventsSQL(1))}
	defer func() {
		for _, a := range args {
			C.free(unsafe.Pointer(a))
		}
	}()
	var errBuf [512]C.char
	w := C.nw_writer_open(args[0], args[1], args[2], args[3], args[4], &errBuf[0], C.int(len(errBuf)))
	if w == nil {
		return nil, fmt.Errorf("event writer: %s", C.GoString(&errBuf[0]))
	}
	return &eventWriter{w: w}, nil
}

// Fields of a request and of an event in req and ev (nw_write_group).
const (
	requestInts = C.NW_REQUEST_INTS
	eventInts   = C.NW_EVENT_INTS
)

func (e *eventWriter) write(_ context.Context, group []*store.Request) error {
	e.req, e.ev, e.data = e.req[:0], e.ev[:0], e.data[:0]
	events := 0
	for _, r := range group {
		rows := sqlstore.EventRows(r)
		events += len(rows)
		e.req = append(e.req, int64(len(e.data)), int64(len(r.Node)), int64(r.Seq), r.Received.UnixNano(), int64(len(rows)))
		e.data = append(e.data, r.Node...)
		for _, row := range rows {
			hasUID := int64(0)
			if row.UID >= 0 {
				hasUID = 1
			}
			e.ev = append(e.ev, int64(row.Index), row.TimeNS, row.UID, hasUID)
			for _, s := range []string{eventfilter.KindName(row.Kind), row.Binary, row.User, row.Pod, row.Namespace, row.Container, row.Session} {
				appendText(e, s)
			}
			appendText(e, row.Body)
		}
	}
	// C reads exactly this layout; a mismatch must not become a read past the end.
	if len(e.req) != len(group)*requestInts || len(e.ev) != events*eventInts {
		return errors.New("event writer: the packed group does not match the C layout")
	}
	e.data = append(e.data, 0) // never empty: C reads texts at data+offset
	e.ev = append(e.ev, 0)
	e.claimed = append(e.claimed[:0], make([]byte, len(group))...)
	restart := C.int(0)
	if e.restart.Swap(false) {
		restart = 1
	}
	var errBuf [512]C.char
	rc := C.nw_write_group(e.w, (*C.int64_t)(unsafe.Pointer(&e.req[0])), C.int(len(group)),
		(*C.int64_t)(unsafe.Pointer(&e.ev[0])), (*C.char)(unsafe.Pointer(&e.data[0])),
		(*C.char)(unsafe.Pointer(&e.claimed[0])), restart, &errBuf[0], C.int(len(errBuf)))
	if rc != 0 {
		for _, r := range group {
			r.Duplicate = false
		}
		return fmt.Errorf("sqlite %s", C.GoString(&errBuf[0]))
	}
	for i, r := range group {
		r.Duplicate = e.claimed[i] == 0
	}
	return nil
}

// appendText adds a text or blob to data and where it is to ev.
func appendText[T ~string | ~[]byte](e *eventWriter, s T) {
	e.ev = append(e.ev, int64(len(e.data)), int64(len(s)))
	e.data = append(e.data, s...)
}

func (e *eventWriter) close() error {
	C.nw_writer_close(e.w)
	return nil
}

// eventWriterFor opens the C event writer for the file at path. Its
// commits write the WAL but leave its sync to flush, which runs beside the
// writer for every group committed before it began; the group commit
// answers a group only after that. A commit's sync had held the writer
// 1-2 ms, and 40-100 ms while a checkpoint's sync of the database file kept
// the disk busy, with every batch arriving meanwhile queued behind it.
func eventWriterFor(path string, pragmas []string) (*eventHooks, error) {
	e, err := openEventWriter(path, pragmas)
	if err != nil {
		return nil, err
	}
	wal := &walFile{path: path + "-wal"}
	return &eventHooks{write: e.write, flush: wal.flush, restart: func() { e.restart.Store(true) },
		close: func() error { return errors.Join(e.close(), wal.close()) }}, nil
}

// walFile is the database's WAL, opened on the first flush: SQLite has
// created it by then, and keeps it while the event writer's connection is
// open. Only the group commit's flusher calls flush.
type walFile struct {
	path string
	f    *os.File
}

func (w *walFile) flush() error {
	if w.f == nil {
		f, err := os.OpenFile(w.path, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("open the WAL: %w", err)
		}
		w.f = f
	}
	if err := unix.Fdatasync(int(w.f.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", w.path, err)
	}
	return nil
}

func (w *walFile) close() error {
	if w.f == nil {
		return nil
	}
	return w.f.Close()
}
