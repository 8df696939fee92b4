package sshtrace

import (
	"path"
	"slices"
	"strings"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// otherAccess recognises, from an exec's own process and its ancestry
// (nearest first), the other interactive ways onto a node: an SSM Session
// Manager shell, `kubectl debug node/...` (its pod is named node-debugger-),
// and nsenter into PID 1's namespaces. The session id is the exec id of the
// process that marks it, so every command under one such shell shares it.
func otherAccess(ex *nodewardv1.ExecEvent) *nodewardv1.Session {
	chain := append([]*nodewardv1.Process{ex.GetProcess(), ex.GetParent()}, ex.GetAncestors()...)
	for _, p := range chain {
		if p == nil {
			continue
		}
		switch kind := accessKind(p); kind {
		case nodewardv1.SessionKind_SESSION_KIND_UNSPECIFIED:
			continue
		case nodewardv1.SessionKind_SESSION_KIND_KUBECTL_DEBUG:
			return &nodewardv1.Session{Id: "kubectl-debug:" + p.GetPod().GetUid(), Kind: kind, User: p.GetPod().GetNamespace() + "/" + p.GetPod().GetName()}
		default:
			return &nodewardv1.Session{Id: p.GetExecId(), Kind: kind, Uid: ex.GetProcess().GetUid()}
		}
	}
	return nil
}

// accessKind says what way onto the node p marks, if any.
func accessKind(p *nodewardv1.Process) nodewardv1.SessionKind {
	switch path.Base(p.GetFilename()) {
	case "ssm-session-worker":
		return nodewardv1.SessionKind_SESSION_KIND_SSM
	case "nsenter":
		if targetsHost(p.GetArgs()) {
			return nodewardv1.SessionKind_SESSION_KIND_NSENTER
		}
	}
	if strings.HasPrefix(p.GetPod().GetName(), "node-debugger-") {
		return nodewardv1.SessionKind_SESSION_KIND_KUBECTL_DEBUG
	}
	return nodewardv1.SessionKind_SESSION_KIND_UNSPECIFIED
}

// targetsHost reports whether nsenter's arguments enter PID 1's namespaces.
func targetsHost(args []string) bool {
	for i, a := range args {
		switch a {
		case "-t", "--target":
			if i+1 < len(args) && args[i+1] == "1" {
				return true
			}
		case "-t1", "--target=1":
			return true
		}
	}
	return slices.Contains(args, "--all") && slices.Contains(args, "1")
}
