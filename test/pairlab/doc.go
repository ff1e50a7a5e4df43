// Package pairlab runs Tandem pairs in the network lab (test/lab) for the
// end-to-end tests, the failover benchmark and `make demo`: it builds the
// binaries, writes each node's configuration and key, starts and stops
// tandemd on nodes a and b, talks to their local APIs, and runs vipprobe in
// the client namespace to see the pair as a client does.
//
// Analyze turns the prober's lines into the figures the benchmark reports:
// the outage (from the failure to the first answer of the new active) and
// dup_vip (how long after the new active's claim the client still reached
// the old node).
package pairlab
