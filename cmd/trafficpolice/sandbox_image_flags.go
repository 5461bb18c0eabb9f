package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/trafficpolice/trafficpolice/sandbox/container"
)

// imageFlags are `sandbox run --image` and its companions.
type imageFlags struct {
	image     string
	mounts    []string
	workdir   string
	env       []string
	address   string
	namespace string
}

func (f *imageFlags) add(fl *pflag.FlagSet) {
	fl.StringVar(&f.image, "image", "", "run COMMAND in a container of this image (through containerd) instead of on the host")
	fl.StringArrayVar(&f.mounts, "mount", nil, "with --image: bind SRC:DST[:ro] into the container (repeatable); the current folder is bound at its own path unless a mount names it")
	fl.StringVar(&f.workdir, "workdir", "", "with --image: COMMAND's folder in the container (default: the current folder)")
	fl.StringArrayVar(&f.env, "env", nil, "with --image: set K=V in the container (repeatable)")
	fl.StringVar(&f.address, "containerd-address", "", "with --image: containerd's socket (default $"+container.AddressEnv+" or "+container.DefaultAddress+")")
	fl.StringVar(&f.namespace, "containerd-namespace", container.DefaultNamespace, "with --image: containerd namespace holding the image")
}

// options checks the flags; targetEnv (the pod's, from feature.env) goes
// into the container before --env, which wins.
func (f *imageFlags) options(targetEnv []string) (container.Options, error) {
	o := container.Options{Address: f.address, Namespace: f.namespace, Workdir: f.workdir}
	if f.image == "" {
		for name, set := range map[string]bool{"--mount": len(f.mounts) > 0, "--workdir": f.workdir != "", "--env": len(f.env) > 0} {
			if set {
				return o, fmt.Errorf("%s is for containers: add --image IMAGE, or drop %s", name, name)
			}
		}
		return o, nil
	}
	for _, m := range f.mounts {
		mt, err := container.ParseMount(m)
		if err != nil {
			return o, err
		}
		o.Mounts = append(o.Mounts, mt)
	}
	if f.workdir != "" && !strings.HasPrefix(f.workdir, "/") {
		return o, fmt.Errorf("--workdir %q is invalid: want an absolute path inside the container", f.workdir)
	}
	for _, kv := range f.env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return o, fmt.Errorf("--env %q is invalid: want K=V", kv)
		}
	}
	o.Env = append(append([]string{}, targetEnv...), f.env...)
	return o, nil
}
