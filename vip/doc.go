// Package vip moves the pair's virtual addresses: it claims a group of
// VIPs (IPv4 and IPv6) on the data interface, makes every host on the LAN
// point at this node at once, watches for anyone else claiming them while
// we own them, and gives them up again.
//
// # Contract
//
// A Manager does what it is told and reports what it sees; it never
// decides roles. The pair state machine orders its calls (invariant I3:
// persist the epoch, then Claim, then start listeners; on demotion stop
// listeners, then Release, then persist).
//
//   - Claim adds every VIP with netlink (RTM_NEWADDR with NLM_F_REPLACE),
//     preferred lifetime 0, valid lifetime forever or Config.AddrLifetime,
//     IPv6 with IFA_F_NODAD so the address is usable at once. A deprecated
//     (preferred lifetime 0) IPv6 address is never chosen as a source.
//     Linux ignores that flag for IPv4: an IPv4 VIP stays out of source
//     selection when it is a secondary address (the interface has its own
//     address in the subnet, the usual set-up) or a /32; Claim logs a
//     warning when the kernel would source from it. The group moves as one:
//     if any VIP cannot be added, what was added is removed and Claim fails.
//     The first announcement round is on the wire before Claim returns,
//     about a millisecond after Claim began (docs/benchmarks.md).
//   - Release stops the announcements first, then removes exactly the
//     configured VIPs from their link, then the macvlan. It works from the
//     configuration, not from memory, so it is idempotent and also cleans
//     up after a crashed run. It never gives up halfway because its context
//     ended (see Release).
//   - Recover, at start-up, removes the macvlan and any of the group's VIPs
//     found on any link of the namespace, and returns what it removed.
//   - Announce re-sends a round at once and restarts the schedule; the
//     state machine asks for it whenever a second owner may have existed.
//   - While owned, the VIPs are checked every second: one that disappeared
//     (removed by hand, or flushed with its link: Linux drops IPv6
//     addresses when a link is set down) is put back and announced again,
//     and counted in Status.AddrRestores; with AddrLifetime the lease is
//     renewed every third of it.
//   - Conflicts delivers a Conflict (VIP, the other MAC, time, evidence)
//     for every frame from another host that claims one of our VIPs while
//     we own it. Detection runs only while the group is owned.
//   - Close stops every goroutine and closes every socket, but leaves the
//     addresses alone: a clean shutdown releases first.
//
// # What goes on the wire
//
// Announcement round, sent at Claim, at Announce and on the Schedule
// (default: 5 repeats 1 s apart), from the MAC of the link the VIPs live on:
//
//	per IPv4 VIP, gratuitous ARP request, then gratuitous ARP reply:
//	  Ethernet  dst ff:ff:ff:ff:ff:ff  src MAC  type 0x0806
//	  ARP       htype 1  ptype 0x0800  hlen 6  plen 4  op 1 (request) | 2 (reply)
//	            sha MAC  spa VIP  tha 00:00:00:00:00:00 (request) | MAC (reply)  tpa VIP
//	per IPv6 VIP, unsolicited neighbour advertisement:
//	  Ethernet  dst 33:33:00:00:00:01  src MAC  type 0x86dd
//	  IPv6      src VIP  dst ff02::1  next header 58  hop limit 255
//	  ICMPv6    type 136 code 0  flags R=0 S=0 O=1  target VIP
//	            option 2 (target link-layer address) = MAC
//
// Both ARP forms are sent because hosts differ in which one they honour.
// Linux updates an existing neighbour entry from either, at once, if it is
// gratuitous (sender and target protocol addresses equal, and for a reply
// also target hardware address = sender hardware address: arp_is_garp in
// net/ipv4/arp.c); anything else arriving within the entry's locktime (1 s
// by default) of its last update is ignored. The reply form above is
// therefore built with tha = MAC; a reply with a broadcast tha, as some
// daemons send, would be held back by locktime exactly when it matters:
// right after the client last talked to the old owner. The repeats, spaced
// by at least Schedule.Interval even after a stall, are for lost frames,
// switches still learning and hosts without that rule.
//
// Probe round, every Config.ProbeInterval (default 500 ms) while owned,
// and once right after the first announcement:
//
//	per IPv4 VIP, ARP probe (RFC 5227): op 1, sha MAC, spa 0.0.0.0,
//	  tha 0, tpa VIP, to broadcast. It updates no cache anywhere; a host
//	  holding the VIP answers with a reply unicast to MAC, which the
//	  monitor reports.
//	per IPv6 VIP, neighbour solicitation: IPv6 src = a link-local address
//	  of the data interface, dst = the VIP's solicited-node group, hop
//	  limit 255, target VIP, option 1 (source link-layer address) = MAC.
//	  A holder answers with a solicited NA unicast to us. (Not a DAD probe
//	  from ::, which Linux answers with an NA to all nodes with the
//	  Override flag: that would re-point every client at the other holder.)
//	  Skipped when the interface has no link-local address.
//
// These constants are part of the formats: EtherTypes 0x0806 and 0x86dd,
// ARP hardware type 1 and protocol 0x0800 with lengths 6 and 4, ICMPv6
// types 135/136, option types 1/2, hop limit 255, ff02::1 and 33:33:xx.
// They come from RFC 826, 5227, 4861 and 2464 and never change; there is
// no version field because nothing here is a format of ours.
//
// The monitor reads one ETH_P_ALL packet socket on the data interface with
// a classic BPF filter attached before bind: frames this host sends are
// dropped (pkt_type OUTGOING) and only ARP and ICMPv6 type 136 are kept.
// A frame claims an address when it is an ARP request or reply with that
// sender protocol address, or a valid NA (hop limit 255, code 0, correct
// checksum, RFC 4861 7.1.2) with that target. A claim for one of our VIPs
// is a conflict if its MAC is not ours; with the virtual MAC it is also a
// conflict if it carries our own virtual MAC (it came from the wire, so
// another host holds the macvlan: Conflict.DuplicateMAC). Each (VIP, MAC)
// is reported at most once a second; the channel holds 64 events, and
// events that do not fit are dropped and counted, never waited for.
//
// # Virtual MAC
//
// With Config.VirtualMAC, Claim creates a macvlan (bridge mode, no IPv6
// address generation, the configured MAC) on the data interface and puts
// the VIPs there; the announcements and probes go out from the virtual
// MAC. Clients' caches keep the same MAC across failovers; the GARPs teach
// the switches the new port. Claim also raises the data interface's
// net.ipv4.conf.<if>.arp_ignore to 1 and arp_announce to 2 (never lowers
// them; keepalived does the same for its VMAC): otherwise the parent
// answers ARP for the VIP with its own MAC and clients learn the wrong one.
// Strict reverse-path filtering (rp_filter=1) on the parent or "all" drops
// traffic to the VIP in this mode, as for any macvlan; loose (2) is fine.
//
// Limits of this mode, by design: a crashed peer that still holds the
// macvlan is not probed, because it would answer from the virtual MAC and
// re-teach the switch its own port; it is reported (DuplicateMAC) when it
// speaks on its own. A peer's kernel never hears our frames either (a
// macvlan drops frames carrying its own MAC as source), so the takeover is
// stable while it stays silent.
//
// # Namespaces and the OS boundary
//
// Every netlink call goes through Config.Netlink, every socket is opened
// and every sysctl written inside Config.Do; nothing else touches the
// system, so a test can run a Manager per lab namespace from one process.
// The packet code (speaker, monitor, frame codecs) works on a
// net.PacketConn and is unit-tested without root over an in-memory hub on
// the manual clock; the root tests in lab_test.go prove the rest in real
// namespaces.
//
// # Goroutines
//
// While the group is owned (from Claim to Release or Close) there are two,
// both owned by the session and stopped by stopSession, which cancels
// their context, closes their sockets and waits for them:
//
//   - speaker.run: follows the announcement Schedule, sends probe rounds
//     on a ticker, checks (restores, renews) the addresses every second;
//     blocks only on the clock and on one netlink request per check.
//   - monitor.run: reads the monitor socket, emits conflicts; blocks in
//     ReadFrom (ended by closing the socket) or in its read-error back-off
//     (ended by the context).
//
// After a stall (the loop wakes over a second later than its ticker
// allows: SIGSTOP, a paused VM) the speaker holds its timed outward actions
// (scheduled announcements, restores) for 2 s, so that the state machine,
// which meanwhile may have learnt of a newer epoch, can Release first.
// Probes continue; explicit Claim and Announce calls are never held.
//
// Nothing runs while the group is not owned. Close waits for both before
// it closes the Conflicts channel, so no send can race the close.
package vip
