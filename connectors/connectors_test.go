package connectors

import (
	"errors"
	"strings"
	"testing"
)

func TestSettingsRedactSecrets(t *testing.T) {
	s := Settings{"host": "192.0.2.20", "password": "hunter2", "db-password": "x1", "api-token": "t0k", "dsn": "postgres://u:p@h/db", "user": "app"}
	got := s.String()
	for _, secret := range []string{"hunter2", "x1", "t0k", "u:p@h"} {
		if strings.Contains(got, secret) {
			t.Errorf("String() = %q leaks %q", got, secret)
		}
	}
	if !strings.Contains(got, "host=192.0.2.20") || !strings.Contains(got, "user=app") {
		t.Errorf("String() = %q lost plain settings", got)
	}
	if s["password"] != "hunter2" {
		t.Error("Redacted changed the original")
	}
}

func TestRegistryAndPermanent(t *testing.T) {
	var r Registry
	r.Register("x", func(name string, s Settings) (Connector, error) { return nil, errors.New("boom") })
	if _, err := r.Open("y", "c1", nil); err == nil || !strings.Contains(err.Error(), `"y"`) {
		t.Errorf("Open(unknown) = %v", err)
	}
	if _, err := r.Open("x", "c1", nil); err == nil || !strings.Contains(err.Error(), `"c1"`) {
		t.Errorf("Open(failing) = %v, want the connection named", err)
	}
	base := errors.New("bad param")
	if err := Permanent(base); !IsPermanent(err) || !errors.Is(err, base) {
		t.Error("Permanent lost its mark or its cause")
	}
	if IsPermanent(base) || Permanent(nil) != nil {
		t.Error("IsPermanent/Permanent(nil) wrong")
	}
	if _, err := (Settings{}).Require("host"); err == nil || !strings.Contains(err.Error(), `"host"`) {
		t.Errorf("Require = %v", err)
	}
}
