// Package serve is the HTTP plumbing the sample apps share: seed-style log
// lines ("[DEBUG messages_db] store; ..."), an access log that names each
// request's peer address, and a server that stops with its context.
//
// It holds no app logic and must not decide routes or answers.
package serve
