package daemon

import (
	"github.com/tandem-ha/tandem/heartbeat"
	"github.com/tandem-ha/tandem/internal/pair"
)

// The heartbeat carries the pair's advert in its generic payload: epoch,
// role and LSN in their own fields, the flags in Health. These bits are
// part of the heartbeat format as tandemd uses it (append only; a receiver
// ignores bits it does not know).
const (
	flagMaintenance uint32 = 1 << iota
	flagOutdated
	flagLANUp
	flagHearPeer
	flagHandover
	flagDegraded
	flagDataKnown
	flagWantActive
	flagRefused
	flagNoFollow
)

func payloadFromAdvert(a pair.Advert) heartbeat.Payload {
	var h uint32
	set := func(on bool, bit uint32) {
		if on {
			h |= bit
		}
	}
	set(a.Maintenance, flagMaintenance)
	set(a.Outdated, flagOutdated)
	set(a.LANUp, flagLANUp)
	set(a.HearPeer, flagHearPeer)
	set(a.Handover, flagHandover)
	set(a.Degraded, flagDegraded)
	set(a.DataKnown, flagDataKnown)
	set(a.WantActive, flagWantActive)
	set(a.Refused, flagRefused)
	set(a.NoFollow, flagNoFollow)
	p := heartbeat.Payload{Epoch: a.Epoch, Role: uint8(a.Role), CommittedLSN: a.LSN, AppliedLSN: a.LSN, Health: h, Generation: a.MaintGen}
	if a.Handover {
		p.Handover = 1
	}
	return p
}

func advertFromPayload(p heartbeat.Payload) pair.Advert {
	h := p.Health
	return pair.Advert{
		Epoch:       p.Epoch,
		Role:        pair.Role(p.Role),
		LSN:         p.CommittedLSN,
		Maintenance: h&flagMaintenance != 0,
		Outdated:    h&flagOutdated != 0,
		LANUp:       h&flagLANUp != 0,
		HearPeer:    h&flagHearPeer != 0,
		Handover:    h&flagHandover != 0 || p.Handover != 0,
		Degraded:    h&flagDegraded != 0,
		DataKnown:   h&flagDataKnown != 0,
		WantActive:  h&flagWantActive != 0,
		Refused:     h&flagRefused != 0,
		NoFollow:    h&flagNoFollow != 0,
		MaintGen:    p.Generation,
	}
}
