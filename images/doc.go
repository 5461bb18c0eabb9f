// Package images builds the OCI images trafficpolice ships and uses — the
// agent image (the static trafficpolice binary), a small busybox image for
// tests, and dev images packed from a root folder (a debootstrap tree) — and
// imports OCI archives into containerd.
//
// Builds are reproducible: every timestamp is one fixed epoch
// (SOURCE_DATE_EPOCH, or 1970), entries are sorted, owners are numeric, so
// the same inputs give the same image digest on any machine. No Docker and
// no registry is needed: images are written as OCI archives (an OCI image
// layout in a tar) that `trafficpolice images import` or `ctr images import`
// load.
//
// It must not run containers (that is sandbox/container), pull from or push
// to registries, or change the host's files: it only reads its inputs and
// writes the archive it is asked for.
package images
