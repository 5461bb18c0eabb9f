// Package container runs the sandboxed app as a container, through
// containerd's Go client, instead of as a plain process: the container joins
// the sandbox's network namespace (so its traffic is policed like any
// process's), sees the sandbox's resolv.conf and hosts, gets the current
// folder at the same path, runs as the invoking user, and has its stdio (a
// TTY when there is one), signals and exit status passed through. Afterwards
// the container, its task and its snapshot are removed; a run killed with
// kill -9 leaves a record that Cleanup uses to remove them later.
//
// It must not create or change network namespaces, routes or firewall rules
// (that is package netns), decide anything about routing, or build images
// (package images): it only asks containerd to run one.
package container
