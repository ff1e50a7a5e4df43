package wip

import "testing"

func TestX(t *testing.T) { t.Skip("no") }
