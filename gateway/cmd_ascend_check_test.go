//go:build cgo

package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// emulatorHome builds the CANN emulator (ascend/emu) and returns its toolkit home.
func emulatorHome(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command("make", "-C", "../ascend/emu").CombinedOutput(); err != nil {
		t.Fatalf("building the CANN emulator: %v\n%s", err, out)
	}
	home, err := filepath.Abs("../ascend/emu/build")
	if err != nil {
		t.Fatal(err)
	}
	return home
}

func TestAscendCheckOnEmulator(t *testing.T) {
	home := emulatorHome(t)
	for _, args := range [][]string{{"--world-size", "2"}, {"--precision", "f32"}} {
		var out, errb bytes.Buffer
		env := &cmdEnv{stdout: &out, stderr: &errb, environ: map[string]string{"ASCEND_TOOLKIT_HOME": home}}
		if code := run(append([]string{"ascend-check", "--log-format", "json"}, args...), env); code != 0 {
			t.Fatalf("%v: exit %d\n%s\n%s", args, code, out.String(), errb.String())
		}
		for _, want := range []string{"aclnnWeightQuantBatchMatmulV2", "MLAAttention", "ops match the reference"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%v: output lacks %q:\n%s", args, want, out.String())
			}
		}
	}
}

func TestAscendCheckWithoutCANN(t *testing.T) {
	var out, errb bytes.Buffer
	env := &cmdEnv{stdout: &out, stderr: &errb, environ: map[string]string{}}
	code := run([]string{"ascend-check", "--cann-home", t.TempDir(), "--log-format", "json"}, env)
	if code == 0 {
		t.Fatal("ascend-check succeeded without CANN")
	}
	for _, want := range []string{"missing libraries", "libascendcl.so", "missing symbols", "aclnnRmsNormGetWorkspaceSize"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q: %s", want, errb.String())
		}
	}
}
