// Command nodeward-render prints the deploy manifests as a cluster would
// receive them, with no kubectl or helm binary needed:
//
//	nodeward-render kustomize deploy/kustomize/overlays/eks
//	nodeward-render helm deploy/helm/nodeward --namespace nodeward --set monitoring.enabled=true
//
// Every object is also decoded strictly into its API type first, so a typo
// in a field name fails here rather than in the cluster.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nodeward/nodeward/deploy/render"
)

type setFlags []string

func (s *setFlags) String() string     { return strings.Join(*s, ",") }
func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "nodeward-render: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) < 1 {
		return errors.New("usage: nodeward-render kustomize DIR | helm CHART [--release NAME] [--namespace NS] [--set K=V ...]")
	}
	var (
		out []byte
		err error
	)
	switch args[0] {
	case "kustomize":
		fs := flag.NewFlagSet("kustomize", flag.ContinueOnError)
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return errors.New("usage: nodeward-render kustomize DIR")
		}
		out, err = render.Kustomize(fs.Arg(0))
	case "helm":
		fs := flag.NewFlagSet("helm", flag.ContinueOnError)
		o := render.HelmOptions{}
		var set setFlags
		fs.StringVar(&o.Release, "release", "nodeward", "release name")
		fs.StringVar(&o.Namespace, "namespace", "nodeward", "release namespace")
		fs.StringVar(&o.KubeVersion, "kube-version", "", "Kubernetes version to render for (default "+render.DefaultKubeVersion+")")
		fs.Var(&set, "set", "a value, as helm --set (repeatable)")
		// The chart directory may come before or after the flags.
		rest := args[1:]
		var chart string
		if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
			chart, rest = rest[0], rest[1:]
		}
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if chart == "" && fs.NArg() == 1 {
			chart = fs.Arg(0)
		}
		if chart == "" {
			return errors.New("usage: nodeward-render helm CHART [flags]")
		}
		o.Set = set
		out, err = render.Helm(chart, o)
	default:
		return fmt.Errorf("unknown mode %q (want kustomize or helm)", args[0])
	}
	if err != nil {
		return err
	}
	scheme, err := render.Scheme()
	if err != nil {
		return err
	}
	if _, err := render.Decode(bytes.NewReader(out), scheme); err != nil {
		return fmt.Errorf("strict decode: %w", err)
	}
	_, err = stdout.Write(out)
	return err
}
