// Package pgtest starts a hermetic PostgreSQL server for tests: initdb and
// pg_ctl in a temporary directory, on 127.0.0.1 and a free port, run as the
// postgres user, stopped when the test binary ends. Each caller gets a
// fresh database on it.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nodeward/nodeward/internal/testutil"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// Bin is where Debian installs PostgreSQL 15; $NODEWARD_PG_BIN overrides it.
func Bin() string {
	if b := os.Getenv("NODEWARD_PG_BIN"); b != "" {
		return b
	}
	return "/usr/lib/postgresql/15/bin"
}

// Server is one running test server.
type Server struct {
	Dir  string
	Port int
	stop func()
}

var (
	mu     sync.Mutex
	shared *Server
	dbSeq  atomic.Int64
)

// Main runs the tests and then stops the shared server, if one started.
func Main(m *testing.M) {
	code := m.Run()
	mu.Lock()
	if shared != nil {
		shared.stop()
	}
	mu.Unlock()
	os.Exit(code)
}

// Start starts a new server owned by the caller (Stop it). Tests needing
// PostgreSQL skip without it, or fail under NODEWARD_REQUIRE_PRIVILEGED=1.
func Start(t testing.TB) *Server {
	t.Helper()
	testutil.RequirePrivileged(t)
	if _, err := os.Stat(filepath.Join(Bin(), "initdb")); err != nil {
		testutil.Unavailable(t, "PostgreSQL not installed at "+Bin()+" (apt-get install postgresql)")
	}
	pg, err := user.Lookup("postgres")
	if err != nil {
		testutil.Unavailable(t, "no postgres user: "+err.Error())
	}
	s, err := start(pg)
	if err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	return s
}

func start(pg *user.User) (*Server, error) {
	dir, err := os.MkdirTemp("", "nodeward-pg-")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	run := func(args ...string) error {
		cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w\n%s", filepath.Base(args[0]), err, out)
		}
		return nil
	}
	if err := run(filepath.Join(Bin(), "initdb"), "-D", filepath.Join(dir, "data"), "-A", "trust", "-U", "postgres",
		"--no-sync", "-E", "UTF8", "--locale=C.UTF-8"); err != nil {
		return nil, err
	}
	var port int
	for attempt := 0; ; attempt++ {
		port, err = freePort()
		if err != nil {
			return nil, err
		}
		err = run(filepath.Join(Bin(), "pg_ctl"), "-D", filepath.Join(dir, "data"), "-l", filepath.Join(dir, "pg.log"), "-w", "-t", "30",
			"-o", fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c max_connections=300", port, dir), "start")
		if err == nil || attempt == 3 {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, Port: port}
	s.stop = func() {
		_ = run(filepath.Join(Bin(), "pg_ctl"), "-D", filepath.Join(dir, "data"), "-m", "fast", "-w", "stop")
		_ = os.RemoveAll(dir)
	}
	return s, nil
}

// Stop stops the server and removes its files.
func (s *Server) Stop() { s.stop() }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// AdminDSN is the connection string of the server's postgres database.
func (s *Server) AdminDSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.Port)
}

// NewDatabase creates an empty database and returns its connection string.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), dbSeq.Add(1))
	db, err := sql.Open("pgx", s.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, name)
}

// DSN returns a fresh database on the shared server of this test binary
// (started on first use; use Main in TestMain to stop it).
func DSN(t testing.TB) string {
	t.Helper()
	s := func() *Server {
		mu.Lock()
		defer mu.Unlock() // Start may skip the test (Goexit)
		if shared == nil {
			shared = Start(t)
		}
		return shared
	}()
	return s.NewDatabase(t)
}
