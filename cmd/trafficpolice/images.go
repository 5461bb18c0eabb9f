package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/containerd"
	"github.com/spf13/cobra"

	"github.com/trafficpolice/trafficpolice/images"
	"github.com/trafficpolice/trafficpolice/sandbox/container"
)

func newImagesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "images",
		Short: "Build reproducible OCI images (agent, busybox, dev images) and import them into containerd",
		Example: "  trafficpolice images build agent -o agent.tar\n" +
			"  sudo trafficpolice images import -n k8s.io agent.tar",
	}
	cmd.AddCommand(newImagesBuildCommand(), newImagesImportCommand())
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

func newBuildAgentCommand() *cobra.Command {
	var f buildFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "The agent's image: the static trafficpolice binary, entrypoint `trafficpolice agent`",
		Example: "  CGO_ENABLED=0 go build -trimpath -o bin/trafficpolice ./cmd/trafficpolice\n" +
			"  bin/trafficpolice images build agent -o agent.tar",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bin := f.binary
			if bin == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find this program's binary (give --binary): %w", err)
				}
				bin = exe
			}
			r, err := images.Agent(bin, f.ref)
			if err != nil {
				return err
			}
			return writeImage(cmd, f.out, r)
		},
	}
	f.register(cmd, "agent.tar", images.AgentRepo+":"+imageTag(), "", "")
	cmd.Flags().StringVar(&f.binary, "binary", "", "static trafficpolice binary to pack (default: this one)")
	return cmd
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
