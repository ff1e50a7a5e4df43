package vip

import (
	"testing"

	"github.com/mdlayher/ethernet"
	"golang.org/x/net/bpf"
)

func TestClassifyProgramKeepsOnlyARPAndNA(t *testing.T) {
	vm, err := bpf.NewVM(classifyProgram())
	if err != nil {
		t.Fatal(err)
	}
	udp := must(t)(unsolicitedNA(macX, vip6))
	udp[ethHeaderLen+6] = 17
	for _, tc := range []struct {
		name string
		b    []byte
		keep bool
	}{
		{"gratuitous ARP request", must(t)(garp(arpRequest, macX, vip4)), true},
		{"gratuitous ARP reply", must(t)(garp(arpReply, macX, vip4)), true},
		{"ARP probe", must(t)(arpProbe(macX, vip4)), true},
		{"neighbour advertisement", must(t)(unsolicitedNA(macX, vip6)), true},
		{"neighbour solicitation", must(t)(solicitationProbe(macX, llB, vip6)), false},
		{"IPv6 UDP", udp, false},
		{"IPv4", must(t)(ethFrame(macB, macX, ethernet.EtherTypeIPv4, make([]byte, 60))), false},
		{"runt", []byte{1, 2, 3}, false},
	} {
		n, err := vm.Run(tc.b)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := n > 0; got != tc.keep {
			t.Errorf("%s: kept %d bytes, want keep=%v", tc.name, n, tc.keep)
		}
		if n > 0 && n != snapLen {
			t.Errorf("%s: snap length %d, want %d", tc.name, n, snapLen)
		}
	}
}

func TestMonitorFilterAssembles(t *testing.T) {
	raw, err := monitorFilter()
	if err != nil {
		t.Fatal(err)
	}
	// The pkt_type guard (3 instructions) precedes the classifier; the
	// kernel rejects programs whose jumps leave it, so check they don't.
	if want := 3 + len(classifyProgram()); len(raw) != want {
		t.Fatalf("filter has %d instructions, want %d", len(raw), want)
	}
	for i, ins := range raw {
		if ins.Op&0x07 == 0x05 { // BPF_JMP
			if i+1+int(ins.Jt) >= len(raw) || i+1+int(ins.Jf) >= len(raw) {
				t.Errorf("instruction %d jumps out of the program: %+v", i, ins)
			}
		}
	}
}
