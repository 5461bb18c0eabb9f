// Package launch starts the sandboxed app: inside the sandbox's network
// namespace, in a private mount namespace where the sandbox's resolv.conf
// and hosts files cover the host's, with its stdio and environment passed
// through, and as the invoking user when trafficpolice runs under sudo.
//
// Go cannot run code between fork and exec, so Start re-executes this
// binary as a small init helper (MaybeRunInit) that does those steps on one
// thread and then execs the app in place: the process Start returns is the
// app. The package decides nothing about routing and creates nothing on the
// host: its mounts live and die with the app's mount namespace.
package launch
