// Command uwu-service is the seed story's cluster service: POST /uwu with
// plain text answers its uwu'd form (see test/apps/uwu).
//
// It is a sample app for the end-to-end tests and the demo; it keeps no
// state and must not call other services.
package main
