// Package enter moves the agent into a running container's network
// namespace, for the agent that runs as a Job on the target's node
// (agent.ephemeral: false): it asks the node's container runtime (CRI)
// for the container's PID, then re-executes the agent inside
// /proc/PID/ns/net, so that every socket it opens is the pod's.
//
// It must not change the target container, nor enter any namespace but
// the network one: the agent keeps its own file system and reads the
// pod's resolver files through /proc/PID/root.
package enter
