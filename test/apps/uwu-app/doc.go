// Command uwu-app is the seed story's app under development: POST /uwu
// sends the body to uwu-service, stores the uwu'd answer in messages-db
// under the next free id, and answers
//
//	Added new message
//	<uwu'd text>
//	with id N
//
// Where the two services are comes from UWU_SERVICE and MESSAGES_DB (or the
// flags of the same meaning), as host:port or a URL. It resolves names with
// Go's own resolver when built with CGO_ENABLED=0, which is the point: the
// sandbox must route it without any libc hook. A failed hop answers 502
// naming that hop. It is a sample app: it holds no state of its own.
package main
