//go:build !unix

package command

import "os/exec"

// inGroup leaves the default: only the program itself is killed.
// TODO(windows): kill the program's children too (a job object); without
// it they may outlive a timeout or cancel.
func inGroup(cmd *exec.Cmd) {}

func killGroup(cmd *exec.Cmd) {}
