// Command tandemctl manages a Tandem pair through the local API of the
// tandemd on this node. See `tandemctl --help`; the command tree lives in
// internal/cli.
package main

import (
	"os"

	"github.com/tandem-ha/tandem/internal/cli"
)

func main() {
	os.Exit(cli.Execute(os.Args[1:], os.Stdout, os.Stderr))
}
