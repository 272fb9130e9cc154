//go:build !linux

package redistest

import "os/exec"

// setDeathSignal does nothing off Linux; t.Cleanup still kills the server.
func setDeathSignal(*exec.Cmd) {}
