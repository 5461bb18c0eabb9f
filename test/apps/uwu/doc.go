// Package uwu turns plain text into its uwu'd form for the sample
// uwu-service, and lets tests compute the answer they expect from it.
//
// The transform is deterministic: the same input always gives the same
// output, with no randomness, clock or global state. It must not do I/O.
package uwu
