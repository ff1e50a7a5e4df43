// Package wip is a fixture: it reads the real clock, under an alias too.
package wip

import (
	"log"
	"time"
	tm "time"
)

func Stamp() time.Time {
	log.Println("x")
	time.Sleep(time.Millisecond)
	<-tm.After(time.Second)
	return time.Now()
}
