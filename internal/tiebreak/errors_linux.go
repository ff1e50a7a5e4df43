package tiebreak

import "syscall"

var errConnRefused = syscall.ECONNREFUSED
