// Package image holds what goes onto an appliance or VM image besides the
// binaries: the systemd unit (tandemd.service: Type=notify, watchdog,
// ExecStopPost cleanup of a crashed run's VIP) and install.sh, which builds
// tandemd and tandemctl and installs them with the unit, the documentation
// and an example configuration into an image's file tree. The package's
// test checks the unit's commands against tandemd's command line.
package image
