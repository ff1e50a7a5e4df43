package all

import (
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/connectors"
)

func TestRegisterAllKinds(t *testing.T) {
	var r connectors.Registry
	Register(&r)
	if got := strings.Join(r.Kinds(), ","); got != "amqp,file,http,mysql,nats,postgres" {
		t.Fatalf("kinds = %s", got)
	}
	// Settings errors name the connection and the field.
	if _, err := r.Open("postgres", "orders-db", connectors.Settings{}); err == nil || !strings.Contains(err.Error(), "orders-db") || !strings.Contains(err.Error(), `"database"`) {
		t.Fatalf("Open without database: %v", err)
	}
	c, err := r.Open("http", "sink", connectors.Settings{"url": "http://192.0.2.100:8080"})
	if err != nil || c.Kind() != "http" {
		t.Fatalf("Open http: %v", err)
	}
	c.Close()
}
