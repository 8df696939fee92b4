//go:build cgo

package sqlite

/*
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

enum {
	NW_OK = 0, NW_DONE = 101,
	NW_OPEN_READWRITE = 0x2, NW_OPEN_NOMUTEX = 0x8000, NW_CHECKPOINT_RESTART = 2,
	NW_REQUEST_INTS = 5, // node offset, node length, seq, received_ns, events
	NW_EVENT_INTS = 20,  // idx, time_ns, uid, has uid, then 8 texts as offset, length
};

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
	int rc = sqlite3_open_v2(path, &w->db, NW_OPEN_READWRITE | NW_OPEN_NOMUTEX, NULL);
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
// restart, it then checkpoints and rewinds the WAL, if readers let it
// within a few milliseconds.
static int nw_write_group(nw_writer *w, const int64_t *req, int nreq, const int64_t *ev, const char *data,
		char *claimed, int restart, char *err, int errlen) {
	sqlite3 *db = w->db;
	int rc = nw_exec(db, "BEGIN IMMEDIATE", err, errlen);
	if (rc != NW_OK) return rc;
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
	if (rc == NW_OK && restart) {
		int tries = 5;
		sqlite3_busy_handler(db, nw_busy, &tries);
		sqlite3_wal_checkpoint_v2(db, NULL, NW_CHECKPOINT_RESTART, NULL, NULL); // else on a later request
		sqlite3_busy_handler(db, nw_busy, NULL);
	}
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
	"strings"
	"sync/atomic"
	"unsafe"

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
	restart atomic.Bool // rewind the WAL after the next group
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

// eventWriterFor opens the C event writer for the file at path.
func eventWriterFor(path string, pragmas []string) (*eventHooks, error) {
	e, err := openEventWriter(path, pragmas)
	if err != nil {
		return nil, err
	}
	return &eventHooks{write: e.write, restart: func() { e.restart.Store(true) }, close: e.close}, nil
}
