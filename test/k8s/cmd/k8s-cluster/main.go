// Command k8s-cluster drives the test harness's single-node Kubernetes by
// hand:
//
//	k8s-cluster build    fill the binary cache (what the first test run would do)
//	k8s-cluster up       start a cluster and keep it until interrupted, printing its KUBECONFIG,
//	                     its registry, its kubectl and the app image its node has
//	k8s-cluster demo     the seed story through Kubernetes: on a cluster of the harness's own,
//	                     or, with --kubeconfig, on yours (see the README's "Kubernetes")
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/trafficpolice/trafficpolice/test/k8s"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: k8s-cluster build | up | demo [--kubeconfig FILE] [--trafficpolice BIN] [--agent-image REF] [--app-image REF] [--ephemeral]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "build":
		start := time.Now()
		if _, err = k8s.Build(os.Stderr); err == nil {
			fmt.Fprintf(os.Stderr, "k8s-cluster: binaries ready in %s\n", time.Since(start).Round(time.Second))
		}
	case "up":
		var c *k8s.Cluster
		if c, err = k8s.Start(os.Stderr); err == nil {
			// Comments after the export, so that eval "$(k8s-cluster up)"
			// still works: what a first run by hand needs besides the
			// kubeconfig (where to push the agent, a kubectl, an app image).
			fmt.Printf("export KUBECONFIG=%s\n", c.Kubeconfig)
			fmt.Printf("# registry: %s (plain HTTP; the agent of this tree is there as %s)\n", c.Registry, c.AgentImage)
			fmt.Printf("# kubectl: %s\n", c.Bin.Kubectl())
			fmt.Printf("# app image on the node (imagePullPolicy: Never): %s\n", k8s.AppImage)
			fmt.Fprintln(os.Stderr, "k8s-cluster: running; ^C (or SIGTERM) stops and removes it")
			<-ctx.Done()
			c.Stop()
		}
	case "demo":
		err = demo(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: use build, up or demo", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8s-cluster:", err)
		os.Exit(1)
	}
}

func demo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "run on this cluster (default: start the harness's own)")
	tp := fs.String("trafficpolice", "", "the trafficpolice binary (default: build it)")
	agentImage := fs.String("agent-image", "", "agent image the nodes have (default: the harness's)")
	appImage := fs.String("app-image", "", "image with test/k8s/testapp the nodes can pull (default: the harness's)")
	ephemeral := fs.Bool("ephemeral", false, "start the agent as an ephemeral container instead of a Job")
	fs.Parse(args)
	var c *k8s.Cluster
	var err error
	if *kubeconfig != "" {
		if c, err = k8s.Attach(*kubeconfig, *appImage); err != nil {
			return err
		}
		if *agentImage == "" {
			return fmt.Errorf("--agent-image is needed on your cluster: an agent image of this tree that its nodes can pull (`trafficpolice images build agent -o agent.tar && trafficpolice images push agent.tar REGISTRY/trafficpolice/agent:TAG`)")
		}
	} else {
		if c, err = k8s.Start(os.Stderr); err != nil {
			return err
		}
		defer c.Stop()
	}
	if *agentImage == "" {
		*agentImage = c.AgentImage
	}
	if *tp == "" {
		if *tp, err = c.BuildBinary("./cmd/trafficpolice"); err != nil {
			return err
		}
	}
	return c.Demo(ctx, k8s.DemoOptions{Trafficpolice: *tp, AgentImage: *agentImage, Ephemeral: *ephemeral, Out: os.Stdout})
}
