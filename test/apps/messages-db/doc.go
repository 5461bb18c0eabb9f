// Command messages-db is the seed story's database: an HTTP store of text
// messages by numeric id, logging each store as the seed's log lines do.
//
//	POST /store/{id}   stores the body; answers "Added new message TEXT with id ID"
//	GET  /messages     lists the messages as JSON, in the order they were stored
//
// With --data FILE it appends one JSON line per message to FILE (and loads
// FILE at start), so a test can read exactly what it received. It is a
// sample app: it must not call other services.
package main
