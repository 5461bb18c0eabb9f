package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/containerd"
	"github.com/spf13/cobra"

	"github.com/trafficpolice/trafficpolice/images"
	"github.com/trafficpolice/trafficpolice/images/gobuild"
	"github.com/trafficpolice/trafficpolice/images/registry"
	"github.com/trafficpolice/trafficpolice/sandbox/container"
)

func newImagesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "images",
		Short: "Build reproducible OCI images (agent, busybox, dev images), push them to registries, import them into containerd",
		Example: "  trafficpolice images build agent -o agent.tar\n" +
			"  trafficpolice images push agent.tar registry.example.com/trafficpolice/agent:" + imageTag() + "\n" +
			"  sudo trafficpolice images import -n k8s.io agent.tar",
	}
	cmd.AddCommand(newImagesBuildCommand(), newImagesImportCommand(), newImagesPushCommand())
	return cmd
}

type buildFlags struct {
	out, ref, binary string
}

func newImagesBuildCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "build agent|busybox|dir",
		Short: "Write an image as an OCI archive, reproducibly (the same inputs give the same digest)",
		Long: "Write an image as an OCI archive without Docker. Every timestamp is SOURCE_DATE_EPOCH (or 1970),\n" +
			"entries are sorted and owners numeric, so the same inputs give the same image digest.\n" +
			"Load the archive with `trafficpolice images import FILE`.",
		Example: "  trafficpolice images build agent -o agent.tar\n" +
			"  SOURCE_DATE_EPOCH=1700000000 trafficpolice images build busybox -o busybox.tar",
	}
	cmd.AddCommand(newBuildAgentCommand(), newBuildBusyboxCommand(), newBuildDirCommand())
	return cmd
}

func (f *buildFlags) register(cmd *cobra.Command, out, ref, binary, binaryHelp string) {
	fl := cmd.Flags()
	fl.StringVarP(&f.out, "output", "o", out, "archive to write")
	fl.StringVar(&f.ref, "ref", ref, "name the image carries (in containerd once imported)")
	if binaryHelp != "" {
		fl.StringVar(&f.binary, "binary", binary, binaryHelp)
	}
}

type agentFlags struct {
	buildFlags
	binaries  []string
	platforms []string
	source    string
}

func newBuildAgentCommand() *cobra.Command {
	var f agentFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "The agent's image for linux/amd64 and linux/arm64: the static trafficpolice binary, entrypoint `trafficpolice agent`",
		Long: "Write the agent's image as an OCI image index with one image per platform, each the static\n" +
			"trafficpolice binary for that platform. The binaries are cross-compiled (CGO_ENABLED=0, as\n" +
			"`make release` builds them) from the checkout that holds the current folder, or --source;\n" +
			"--binary packs binaries you already have instead (one per platform, e.g. from `make release`).\n" +
			"The same commit and Go version give the same digests. Push the archive to a registry the\n" +
			"cluster's nodes pull from with `trafficpolice images push`.",
		Example: "  trafficpolice images build agent -o agent.tar\n" +
			"  trafficpolice images push agent.tar registry.example.com/trafficpolice/agent:" + imageTag() + "\n" +
			"  make release && trafficpolice images build agent --binary dist/trafficpolice-V-linux-amd64 --binary dist/trafficpolice-V-linux-arm64",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			binaries := f.binaries
			if len(binaries) == 0 {
				built, cleanup, err := crossCompileAgent(cmd, f.source, f.platforms)
				defer cleanup()
				if err != nil {
					return err
				}
				binaries = built
			}
			ir, err := images.AgentIndex(binaries, f.ref)
			if err != nil {
				return err
			}
			return writeIndex(cmd, f.out, ir)
		},
	}
	f.register(cmd, "agent.tar", images.AgentRepo+":"+imageTag(), "", "")
	fl := cmd.Flags()
	fl.StringArrayVar(&f.binaries, "binary", nil, "a static trafficpolice binary to pack, its platform read from it (repeat: one per platform); default: cross-compile")
	fl.StringSliceVar(&f.platforms, "platform", agentPlatforms(), "platforms to cross-compile for")
	fl.StringVar(&f.source, "source", "", "checkout of trafficpolice to cross-compile (default: the one holding the current folder)")
	return cmd
}

func agentPlatforms() []string {
	var out []string
	for _, arch := range images.AgentArchs {
		out = append(out, "linux/"+arch)
	}
	return out
}

// crossCompileAgent builds trafficpolice (of this version) for each
// platform from the checkout at source, into a temporary folder that
// cleanup removes.
func crossCompileAgent(cmd *cobra.Command, source string, platforms []string) ([]string, func(), error) {
	nothing := func() {}
	if source == "" {
		source = "."
	}
	root, err := gobuild.FindModule(source)
	if err != nil {
		return nil, nothing, fmt.Errorf("cross-compile the agent: %w; run this in a checkout (git clone https://%s), give --source, "+
			"or give a static binary per platform with --binary", err, gobuild.Module)
	}
	var archs []string
	for _, p := range platforms {
		arch, ok := strings.CutPrefix(p, "linux/")
		if !ok || !slices.Contains(images.AgentArchs, arch) {
			return nil, nothing, fmt.Errorf("--platform %q is not supported: want one or more of %s", p, strings.Join(agentPlatforms(), ", "))
		}
		if !slices.Contains(archs, arch) {
			archs = append(archs, arch)
		}
	}
	if len(archs) == 0 {
		return nil, nothing, fmt.Errorf("--platform is empty: want one or more of %s", strings.Join(agentPlatforms(), ", "))
	}
	dir, err := os.MkdirTemp("", "trafficpolice-agent-*")
	if err != nil {
		return nil, nothing, fmt.Errorf("cross-compile the agent: %w", err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	var out []string
	for _, arch := range archs {
		bin := filepath.Join(dir, "trafficpolice-linux-"+arch)
		fmt.Fprintf(cmd.ErrOrStderr(), "building trafficpolice %s for linux/%s from %s\n", version, arch, root)
		if err := gobuild.Static(cmdContext(cmd), root, arch, version, bin); err != nil {
			return nil, cleanup, err
		}
		out = append(out, bin)
	}
	return out, cleanup, nil
}

func cmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

func newBuildBusyboxCommand() *cobra.Command {
	var f buildFlags
	cmd := &cobra.Command{
		Use:   "busybox",
		Short: "A small shell image from a static busybox (Debian: apt-get install busybox-static)",
		Example: "  apt-get install busybox-static\n" +
			"  trafficpolice images build busybox -o busybox.tar && trafficpolice images import busybox.tar",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := images.Busybox(f.binary, f.ref)
			if err != nil {
				return err
			}
			return writeImage(cmd, f.out, r)
		},
	}
	f.register(cmd, "busybox.tar", images.BusyboxRef, "/bin/busybox", "static busybox binary to pack")
	return cmd
}

func newBuildDirCommand() *cobra.Command {
	var f buildFlags
	cmd := &cobra.Command{
		Use:   "dir ROOT [-- CMD [ARG...]]",
		Short: "Pack a root folder (e.g. made by debootstrap) as an image whose command is CMD (default /bin/sh)",
		Example: "  debootstrap --variant=minbase --include=build-essential,git bookworm /tmp/rootfs\n" +
			"  trafficpolice images build dir /tmp/rootfs -o dev.tar --ref localhost/dev/bookworm:1 -- /bin/bash",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if at := cmd.ArgsLenAtDash(); at > 1 || (at < 0 && len(args) > 1) {
				return fmt.Errorf("give one ROOT folder, then the command after --: got %q", args)
			}
			r, err := images.Dir(args[0], f.ref, args[1:])
			if err != nil {
				return err
			}
			return writeImage(cmd, f.out, r)
		},
	}
	f.register(cmd, "", "", "", "")
	cmd.MarkFlagRequired("output")
	cmd.MarkFlagRequired("ref")
	return cmd
}

// imageTag is this build's version as an image tag.
func imageTag() string {
	if version == "" || version == "dev" {
		return "dev"
	}
	return version
}

func writeImage(cmd *cobra.Command, out string, r images.Recipe) error {
	epoch, err := images.EpochFromEnv()
	if err != nil {
		return err
	}
	r.Epoch = epoch
	abs, err := filepath.Abs(out)
	if err != nil {
		return fmt.Errorf("--output %q: %w", out, err)
	}
	res, err := images.WriteFile(abs, r)
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\n", out, res.Ref, res.Digest)
	return nil
}

// writeIndex writes a multi-platform image as an archive and prints
// FILE REF DIGEST (the index's), then a line per platform: PLATFORM DIGEST.
func writeIndex(cmd *cobra.Command, out string, r images.IndexRecipe) error {
	epoch, err := images.EpochFromEnv()
	if err != nil {
		return err
	}
	for i := range r.Images {
		r.Images[i].Epoch = epoch
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return fmt.Errorf("--output %q: %w", out, err)
	}
	res, err := images.WriteIndexFile(abs, r)
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "%s\t%s\t%s\n", out, res.Ref, res.Digest)
	for _, p := range res.Platforms {
		fmt.Fprintf(w, "\t%s\t%s\n", p.Platform, p.Digest)
	}
	return nil
}

func newImagesImportCommand() *cobra.Command {
	var address, namespace string
	cmd := &cobra.Command{
		Use:   "import FILE...",
		Short: "Import OCI archives into containerd (and unpack them, ready to run)",
		Long: "Import OCI (or Docker) image archives into containerd, in namespace `trafficpolice` by default\n" +
			"(where `sandbox run --image` looks); use -n k8s.io for images Kubernetes should run.",
		Example: "  trafficpolice images build busybox -o busybox.tar && trafficpolice images import busybox.tar",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return importImages(cmd.Context(), cmd, container.Address(address), namespace, args)
		},
	}
	cmd.Flags().StringVar(&address, "containerd-address", "", "containerd's socket (default $"+container.AddressEnv+" or "+container.DefaultAddress+")")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", container.DefaultNamespace, "containerd namespace to import into")
	return cmd
}

func importImages(ctx context.Context, cmd *cobra.Command, address, namespace string, files []string) error {
	if ctx == nil {
		ctx = context.Background()
	}
	client, err := container.Connect(ctx, address)
	if err != nil {
		return err
	}
	defer client.Close()
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("image archive: %w", err)
		}
		imgs, err := images.Import(ctx, client, namespace, containerd.DefaultSnapshotter, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("import %s: %w", file, err)
		}
		for _, img := range imgs {
			fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\n", file, img.Name, img.Digest)
		}
	}
	return nil
}

func newImagesPushCommand() *cobra.Command {
	var o registry.Options
	cmd := &cobra.Command{
		Use:   "push SRC REF",
		Short: "Push an image archive, or mirror an image from its registry, to REF (every platform)",
		Long: "Push SRC to the registry reference REF with your registry credentials: those `docker login`\n" +
			"(or podman) stored, in $DOCKER_CONFIG or ~/.docker/config.json and its credential helpers.\n" +
			"SRC is an image archive (from `trafficpolice images build`, or `docker save`) or an image\n" +
			"reference, which is copied from its registry: all of an index's platforms, same digests.\n" +
			"Then set agent.image to REF for the cluster to pull the agent from there.",
		Example: "  trafficpolice images push agent.tar registry.example.com/trafficpolice/agent:" + imageTag() + "\n" +
			"  trafficpolice images push " + images.AgentRepo + ":" + imageTag() + " registry.example.com/trafficpolice/agent:" + imageTag(),
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := registry.Push(cmdContext(cmd), args[0], args[1], o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\n", p.Ref, p.Digest, strings.Join(p.Platforms, ","))
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.Insecure, "insecure", false, "allow plain HTTP and unverified TLS (a registry on loopback is reached over HTTP anyway)")
	return cmd
}
