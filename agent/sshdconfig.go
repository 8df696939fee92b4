package main

import (
	"fmt"
	"strings"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/posture/sshdconfig"
	"github.com/spf13/cobra"
)

func sshdConfigCmd() *cobra.Command {
	var (
		root string
		spec string
	)
	c := &cobra.Command{
		Use:   "sshd-config",
		Short: "Print sshd's effective configuration as `sshd -T` would",
		Long: `Compute the host's effective sshd configuration the way sshd does (first value wins,
Include with globs, Match blocks, defaults of the installed OpenSSH build) and print the
security keywords as "keyword value" lines in sshd -T's spelling and order, so the two
can be diffed. -C takes the same connection specification as sshd -T -C; Match Group
is resolved from the root's own /etc/passwd and /etc/group.`,
		Example: `  nodeward-agent sshd-config
  nodeward-agent sshd-config --root /host -C user=root,host=bastion,addr=10.0.0.5,laddr=10.0.1.2,lport=22`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := hostfs.Open(root)
			if err != nil {
				return err
			}
			defer func() { _ = r.Close() }()
			prof, err := sshdconfig.DetectProfile(r)
			if err != nil {
				return err
			}
			var ci *sshdconfig.ConnInfo
			if cmd.Flags().Changed("conn") {
				if ci, err = sshdconfig.ParseConnSpec(spec, sshdconfig.Services(r)); err != nil {
					return err
				}
			}
			cfg, err := sshdconfig.Evaluate(r, prof, ci)
			if err != nil {
				return fmt.Errorf("sshd config under %s: %w", root, err)
			}
			if !prof.Verified {
				_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "nodeward-agent: defaults of %s are upstream's, not checked against this build\n", prof.Name())
			}
			for _, u := range cfg.Unrecognised {
				_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "nodeward-agent: skipped keyword this package does not know: %s\n", u)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), strings.Join(cfg.Lines(), "\n"))
			return err
		},
	}
	c.Flags().StringVar(&root, "root", "/", "the host's root filesystem (\"/host\" in the DaemonSet)")
	c.Flags().StringVarP(&spec, "conn", "C", "", "connection specification as for sshd -T -C: user=U,host=H,addr=A,laddr=L,lport=P")
	return c
}
