// Package config reads trafficpolice's configuration: mirrord's config format (JSON, YAML or
// TOML) for the subset of features the two tools share, plus a few keys of our own
// (agent.address, feature.network.outgoing.filter.block).
//
// It is strict on purpose: a typo must not silently change where traffic goes. Every file is
// decoded into a generic tree first and then walked by hand, so that all three formats give the
// same errors, each naming the key's full path (feature.network.outgoing.filter.local[2]):
// unknown keys (with a "did you mean"), wrong types, values out of range, and mirrord keys
// that trafficpolice does not honour where ignoring them would change where traffic goes.
// mirrord keys it does not honour but can run without (feature.fs, operator, the agent's pod
// spec, ...) load, listed in Config.Ignored for a warning each. Syntax errors name the line
// and column. The key table (keys.go) says which key is which; the JSON Schema (Schema,
// schema.json) is written from it.
//
// The package holds the configuration types that every other package imports. It must not
// depend on any other package of this module, must not touch the network or the kernel, and
// does not parse outgoing filter entries: their grammar belongs to the outgoing policy.
package config
