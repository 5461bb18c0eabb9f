package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trafficpolice/trafficpolice/agent/kube"
)

func newLsCommand() *cobra.Command {
	var (
		kf  kubeFlags
		out outputFlag
	)
	cmd := &cobra.Command{
		Use:   "ls [-n NAMESPACE] [--context NAME] [-o text|json]",
		Short: "List what a run may target in a namespace: pods, deployments, statefulsets, jobs, services",
		Long: "List the targets of a namespace (the context's unless -n says), each as --target takes it, with\n" +
			"its containers (pick one with KIND/NAME/container/C) and whether it can be a target now.\n" +
			"Kinds the kubeconfig's user may not list are named at the end.",
		Example: "  trafficpolice ls\n" +
			"  trafficpolice ls -n shop --context staging\n" +
			"  trafficpolice ls -n shop -o json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			access, err := kube.Connect(kube.AccessOptions{Kubeconfig: kf.kubeconfig, Context: kf.context, Namespace: kf.namespace})
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			targets, skipped, err := access.ListTargets(ctx, "")
			if err != nil {
				return err
			}
			if asJSON {
				if targets == nil {
					targets = []kube.TargetInfo{}
				}
				return writeJSON(cmd.OutOrStdout(), struct {
					Namespace string            `json:"namespace"`
					Targets   []kube.TargetInfo `json:"targets"`
					Skipped   []string          `json:"skipped,omitempty"`
				}{access.Namespace, targets, skipped})
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TARGET\tCONTAINERS\tSTATUS")
			for _, t := range targets {
				cs := strings.Join(t.Containers, ",")
				if cs == "" {
					cs = "-"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\n", t.Path, cs, t.Status)
			}
			w.Flush()
			if len(targets) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "no targets in namespace %q (context %q)\n", access.Namespace, access.Context)
			}
			if len(skipped) > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "not listed (this user may not list them): %s\n", strings.Join(skipped, ", "))
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&kf.namespace, "namespace", "n", "", "the namespace (default: the context's)")
	fl.StringVar(&kf.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config; under sudo the invoking user's)")
	fl.StringVar(&kf.context, "context", "", "kubeconfig context (default: its current context)")
	out.add(fl)
	kf.complete(cmd)
	return cmd
}

// complete completes --target, -n and --context from the cluster, as
// kubectl does: what the flags given so far point at.
func (k *kubeFlags) complete(cmd *cobra.Command) {
	access := func() (*kube.Access, error) {
		return kube.Connect(kube.AccessOptions{Kubeconfig: k.kubeconfig, Context: k.context, Namespace: k.namespace})
	}
	fail := cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	if cmd.Flags().Lookup("target") != nil {
		cmd.RegisterFlagCompletionFunc("target", func(cmd *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
			a, err := access()
			if err != nil {
				return nil, fail
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			targets, _, err := a.ListTargets(ctx, "")
			if err != nil {
				return nil, fail
			}
			out := []string{"targetless"}
			for _, t := range targets {
				out = append(out, t.Path)
				if len(t.Containers) > 1 {
					for _, c := range t.Containers {
						out = append(out, t.Path+"/container/"+c)
					}
				}
			}
			return filterPrefix(out, prefix), cobra.ShellCompDirectiveNoFileComp
		})
	}
	cmd.RegisterFlagCompletionFunc("namespace", func(cmd *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
		a, err := access()
		if err != nil {
			return nil, fail
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
		defer cancel()
		names, err := a.Namespaces(ctx)
		if err != nil {
			return nil, fail
		}
		return filterPrefix(names, prefix), cobra.ShellCompDirectiveNoFileComp
	})
	cmd.RegisterFlagCompletionFunc("context", func(_ *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
		names, err := kube.Contexts(kube.AccessOptions{Kubeconfig: k.kubeconfig})
		if err != nil {
			return nil, fail
		}
		return filterPrefix(names, prefix), cobra.ShellCompDirectiveNoFileComp
	})
}

func filterPrefix(all []string, prefix string) []string {
	var out []string
	for _, s := range all {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out
}
