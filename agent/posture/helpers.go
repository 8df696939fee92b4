package posture

import (
	"github.com/nodeward/nodeward/agent/posture/options"
	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// Shorthands for the finding enums the checks use most.
const (
	sevInfo     = nodewardv1.Severity_SEVERITY_INFO
	sevLow      = nodewardv1.Severity_SEVERITY_LOW
	sevMedium   = nodewardv1.Severity_SEVERITY_MEDIUM
	sevHigh     = nodewardv1.Severity_SEVERITY_HIGH
	statPass    = nodewardv1.FindingStatus_FINDING_STATUS_PASS
	statFail    = nodewardv1.FindingStatus_FINDING_STATUS_FAIL
	statUnknown = nodewardv1.FindingStatus_FINDING_STATUS_UNKNOWN
	statError   = nodewardv1.FindingStatus_FINDING_STATUS_ERROR
	statNA      = nodewardv1.FindingStatus_FINDING_STATUS_NOT_APPLICABLE
)

// smallFile bounds the configuration and sysfs files the checks read.
const smallFile = 1 << 20

// evd builds one piece of evidence.
func evd(source, value, reason string) *nodewardv1.Evidence {
	return &nodewardv1.Evidence{Source: source, Value: value, Reason: reason}
}

// The references the checks cite. Ids are given only where the framework
// numbers the item itself.
const (
	eksBPHostsURL      = "https://docs.aws.amazon.com/eks/latest/best-practices/protecting-the-infrastructure.html"
	eksBPEncryptionURL = "https://docs.aws.amazon.com/eks/latest/best-practices/data-encryption-and-secrets-management.html"
	eksBP              = "EKS Best Practices"
	cisAL2023          = "CIS Amazon Linux 2023 Benchmark"
	stigAL2023         = "DISA STIG Amazon Linux 2023"
)

func refEKS(title string) *nodewardv1.Reference {
	return &nodewardv1.Reference{Framework: eksBP, Title: title, Url: eksBPHostsURL}
}

func refCIS(title string) *nodewardv1.Reference {
	return &nodewardv1.Reference{Framework: cisAL2023, Title: title}
}

func refSTIG(id, title string) *nodewardv1.Reference {
	return &nodewardv1.Reference{Framework: stigAL2023, Id: id, Title: title}
}

// postureOptions is the checks' configuration: the agent's flags, or the
// defaults.
func postureOptions(env *source.Env) options.Posture {
	if env != nil && env.Posture != nil {
		return *env.Posture
	}
	return options.Default()
}
