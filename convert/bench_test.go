package convert

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// benchDir returns a folder holding the benchmark checkpoint s, generating it once.
// DSGATE_CONVERT_BENCH_DIR keeps it between runs (e.g. to measure the CLI's memory
// with /usr/bin/time -v); otherwise it lives in the benchmark's temp dir.
func benchDir(b *testing.B, s synth, name string) string {
	dir := os.Getenv("DSGATE_CONVERT_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	dir = filepath.Join(dir, name)
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		return dir
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	n := writeSynth(b, dir, s, 1)
	b.Logf("generated %s: %.2f GB in %.1fs", name, float64(n)/1e9, time.Since(t0).Seconds())
	return dir
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// seqRead reads every safetensors file of dir sequentially and returns MB/s.
func seqRead(b *testing.B, dir string) float64 {
	files, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	buf := make([]byte, 4<<20)
	var n int64
	t0 := time.Now()
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		m, err := io.CopyBuffer(io.Discard, f, buf)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		n += m
	}
	return float64(n) / 1e6 / time.Since(t0).Seconds()
}

// BenchmarkConvert converts generated checkpoints (bf16 ~2.0 GB, fp8 ~1.0 GB) and
// reports conversion MB/s (input tensor bytes per second) beside the plain sequential
// read speed of the same files measured in the same run. Run with -benchtime=1x.
func BenchmarkConvert(b *testing.B) {
	bf := benchSynth
	fp := benchSynth
	fp.fp8 = true
	for _, tc := range []struct {
		name, ckpt string
		s          synth
		opt        Options
	}{
		{"bf16-int4-g128-mp1", "bf16", bf, Options{Mode: ModeBF16Int4, GroupSize: -1}},
		{"bf16-int8-mp8", "bf16", bf, Options{Mode: ModeBF16Int8, MP: 8, GroupSize: -1}},
		{"bf16-bf16-mp8", "bf16", bf, Options{Mode: ModeBF16BF16, MP: 8, GroupSize: -1}},
		{"fp8-bf16", "fp8", fp, Options{Mode: ModeFP8BF16, GroupSize: -1}},
		{"fp8-int4-g128-mp8", "fp8", fp, Options{Mode: ModeBF16Int4, MP: 8, GroupSize: -1}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			in := benchDir(b, tc.s, tc.ckpt)
			read := seqRead(b, in)
			var mbps, cpu float64
			for b.Loop() {
				r0 := cpuSeconds()
				opt := tc.opt
				opt.In, opt.Out = in, b.TempDir()
				res, err := Run(context.Background(), opt)
				if err != nil {
					b.Fatal(err)
				}
				mbps = float64(res.BytesIn) / 1e6 / res.Elapsed.Seconds()
				cpu = cpuSeconds() - r0
				b.SetBytes(res.BytesIn)
				os.RemoveAll(opt.Out)
			}
			b.ReportMetric(mbps, "convert-MB/s")
			b.ReportMetric(read, "seqread-MB/s")
			b.ReportMetric(cpu, "cpu-s") // user+sys of the conversion: the 2-core CI box is shared
		})
	}
}
