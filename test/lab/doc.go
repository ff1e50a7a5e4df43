// Package lab builds real network topologies out of Linux network
// namespaces, veth pairs and bridges, starts processes inside them and
// injects faults, for Tandem's root tests, benchmarks and `make demo`.
//
// # Topology
//
// New builds the pair topology. Every host is a network namespace; every
// cable is a veth pair whose far end is a port of a bridge in one extra
// namespace, the fabric. The fabric plays the switch (bridge "lan") and the
// two crossover cables (bridges "ha1", "ha2"), so a cable can be "pulled" at
// its far end: the host sees NO-CARRIER while its own interface keeps its
// configuration, exactly as with hardware.
//
//	            fabric namespace <prefix>-fab: three bridges
//	bridge lan                                bridge ha1    bridge ha2
//	lan-a  lan-b  lan-client  lan-gw  lan-svc  ha1-a  ha1-b  ha2-a  ha2-b
//	  |      |        |          |       |       |      |      |      |
//	lan0   lan0     lan0       lan0    lan0     ha1    ha1    ha2    ha2
//	 a      b      client       gw      svc      a      b      a      b
//
// Addresses (documentation ranges only; RFC 5737, RFC 3849):
//
//	host    lan0 IPv4      lan0 IPv6            ha1               ha2
//	gw      192.0.2.1/24   2001:db8:0:1::1/64
//	a       192.0.2.11/24  2001:db8:0:1::11/64  198.51.100.1/30   198.51.100.5/30
//	b       192.0.2.12/24  2001:db8:0:1::12/64  198.51.100.2/30   198.51.100.6/30
//	svc     192.0.2.20/24  2001:db8:0:1::20/64
//	client  192.0.2.100/24 2001:db8:0:1::100/64
//
// VIP4 and VIP6 (192.0.2.10, 2001:db8:0:1::10) are reserved for the pair's
// virtual address and configured on no host. Every host but gw has a default
// route via gw. MAC addresses are fixed per host (see Host.MAC), so tests
// and captures can name them. IPv6 duplicate address detection is off in the
// lab's namespaces so addresses are usable at once.
//
// # Names, ownership and cleanup
//
// Every namespace of a run is named <prefix>-<host>, the prefix being "tdl"
// followed by five random hex digits. Interface names live only inside the
// lab's namespaces: nothing is created in, or changed in, the namespace the
// caller runs in (the links are created directly in their target
// namespaces).
//
// A run registers itself in /run/tandem-lab/<prefix>.lock and holds an
// exclusive flock(2) on it for its whole life; <prefix>.json next to it lists
// its namespaces and the processes it started (PID and start time). The
// kernel drops the lock when the owner dies, however it dies. Sweep, which
// New calls first, removes every run whose lock is free: it kills the
// processes the dead run recorded (checking their start time, so a recycled
// PID is never hit), then any process still inside the dead run's
// namespaces, then deletes the namespaces and files. A live run's lock is
// held, so concurrent runs (go test runs packages in parallel) never touch
// each other. A lab made with Options.Persistent (the tdlab CLI's "up") is
// meant to outlive its creator and is only removed by Down or SweepAll.
//
// # Processes
//
// Host.Start runs a program inside a host's namespace (via `ip netns exec`,
// which execs in place, so the PID is the program's) in its own process
// group; Process offers Signal, Freeze/Thaw (SIGSTOP/SIGCONT to the group),
// Stop and Wait. Started processes get SIGKILL if the lab's process dies.
// Host.Do runs Go code on an OS thread switched into the host's namespace;
// sockets opened there stay in that namespace.
//
// # Faults
//
// Every fault returns a *Fault whose Clear undoes exactly it. This kernel
// family is not guaranteed to have sch_netem (the CI machines' kernel does
// not), so impairments are built from nftables and NFQUEUE, which every
// Debian 12 kernel has:
//
//   - CutLink: the fabric-side port of a cable goes down (carrier loss).
//   - Partition: bridge-family nftables rules in the fabric drop every frame
//     between two hosts, on every bridge they share. Silent: links stay up.
//   - Impair: like netem on the host's interface, it acts on what the host
//     sends on it. Loss is a netdev ingress rule on the fabric port with
//     `numgen random` (all frames, ARP included); duplication is an
//     output-hook `dup` in the host (IP and IPv6 it originates); delay,
//     jitter and reorder hold IP packets in an NFQUEUE consumer run by the
//     lab's process, which releases them late (reordered packets are
//     released at once, overtaking the delayed ones, as netem's reorder
//     does). Impair the other end's interface for the reverse direction.
//
// The package requires root, iproute2, nftables and iptables (make test
// installs them); the tests use internal/testenv so that a missing piece
// fails under CI=true.
package lab
