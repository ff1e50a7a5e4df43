// Command tandemd is the Tandem HA pair daemon. Everything it does lives
// in internal/daemon; this file only hands over the command line.
//
//	tandemd run --config /etc/tandem/tandemd.yaml
//	tandemd check-config --config FILE
//	tandemd keygen --out /etc/tandem/pair.key
package main

import (
	"os"

	"github.com/tandem-ha/tandem/internal/daemon"
)

func main() { os.Exit(daemon.Main(os.Args[1:], os.Stdout, os.Stderr)) }
