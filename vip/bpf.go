package vip

import (
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// snapLen is how much of an accepted frame the monitor socket keeps: an
// ARP packet is 42 bytes, a neighbour advertisement with its option 86.
const snapLen = 256

// monitorFilter is the classic BPF program attached to the monitor's
// ETH_P_ALL socket before it is bound, so no frame outside it is ever
// queued. It drops what this host sends (an ETH_P_ALL tap sees outgoing
// frames too, and our own announcements are not conflicts) and keeps only
// ARP and ICMPv6 neighbour advertisements.
func monitorFilter() ([]bpf.RawInstruction, error) {
	prog := append([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType}, // skb->pkt_type
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipFalse: 1},
		bpf.RetConstant{Val: 0},
	}, classifyProgram()...)
	return bpf.Assemble(prog)
}

// classifyProgram is the part of monitorFilter that looks at frame bytes
// only, so tests run it in x/net/bpf's VM (which has no pkt_type).
func classifyProgram() []bpf.Instruction {
	return []bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: 12, Size: 2}, // EtherType
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(unix.ETH_P_ARP), SkipTrue: 5}, // -> 7 accept
		/* 2 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(unix.ETH_P_IPV6), SkipFalse: 5}, // -> 8 drop
		/* 3 */ bpf.LoadAbsolute{Off: ethHeaderLen + 6, Size: 1}, // IPv6 next header
		/* 4 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoICMPv6, SkipFalse: 3}, // -> 8 drop
		/* 5 */ bpf.LoadAbsolute{Off: ethHeaderLen + ipv6HeaderLen, Size: 1}, // ICMPv6 type
		/* 6 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: icmpTypeNA, SkipFalse: 1}, // -> 8 drop
		/* 7 */ bpf.RetConstant{Val: snapLen},
		/* 8 */ bpf.RetConstant{Val: 0},
	}
}
