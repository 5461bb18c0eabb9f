// Package sandbox is one `trafficpolice sandbox run` from start to teardown:
// it turns the configuration into a plan, builds the network namespace and
// its TUN, starts the router and the app, forwards signals, returns the
// app's exit status, and removes everything it created — also what a killed
// earlier run left behind (see Collect).
//
// It owns the lifecycle only: namespaces and firewall rules are done by
// package netns, flows by package router, the app's process by
// sandbox/launch (or, with an image, its container by sandbox/container).
package sandbox
