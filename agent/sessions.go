package main

import (
	"context"
	"log/slog"

	"github.com/nodeward/nodeward/agent/source"
	"github.com/nodeward/nodeward/agent/sshtrace"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// startSessions starts SSH session tracking beside the exec tracer. Its
// events go to emit; the returned enrich, applied to every traced event,
// lets sshd's executables be recognised and tags each exec with the session
// it runs in (SSH, SSM, kubectl debug, nsenter). When tracking cannot run,
// enrich is nil and every snapshot says why.
func startSessions(ctx context.Context, log *slog.Logger, env *source.Env, nodeName, bootID string, logPaths []string,
	emit func(*nodewardv1.Event)) (enrich func(*nodewardv1.Event)) {
	trk, err := sshtrace.New(sshtrace.Config{NodeName: nodeName, BootID: bootID, Proc: env.Proc, Root: env.Root, LogPaths: logPaths, Log: log})
	if err != nil {
		log.Warn("SSH session tracking unavailable", "reason", err)
		env.SSHUnavailable = err.Error()
		return nil
	}
	env.SSHActivity = trk.Activity
	go func() {
		defer trk.Close()
		if err := trk.Run(ctx); err != nil {
			log.Error("SSH session tracking stopped", "err", err)
		}
	}()
	go func() {
		for ev := range trk.Events() {
			emit(ev)
		}
	}()
	return func(ev *nodewardv1.Event) {
		if ex := ev.GetExec(); ex != nil {
			trk.ObserveExec(ex.GetProcess().GetPid())
			ex.GetProcess().Session = trk.SessionOf(ex)
		}
	}
}
