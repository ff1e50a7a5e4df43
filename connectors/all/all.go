// Package all registers every connector kind Tandem ships, so the daemon
// and tandemctl build one Registry the same way.
package all

import (
	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/connectors/amqpconn"
	"github.com/tandem-ha/tandem/connectors/fileconn"
	"github.com/tandem-ha/tandem/connectors/httpconn"
	"github.com/tandem-ha/tandem/connectors/natsconn"
	"github.com/tandem-ha/tandem/connectors/sqlconn"
)

// Register adds the kinds postgres, mysql, http, nats, amqp and file to r.
func Register(r *connectors.Registry) {
	sqlconn.Register(r)
	httpconn.Register(r)
	natsconn.Register(r)
	amqpconn.Register(r)
	fileconn.Register(r)
}
