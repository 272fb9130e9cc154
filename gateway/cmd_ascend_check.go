package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/dsgate/dsgate/ascend"
)

// runAscendCheck runs every backend op on the Ascend ranks (CANN, or its CPU emulator)
// and on the plain-Go reference, and prints one row per op: the first thing to run on a
// machine with NPUs.
func runAscendCheck(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "ascend-check", "ascend-check [--cann-home DIR] [--world-size N] [--precision bf16|f32]")
	home := fs.String("cann-home", ascend.DefaultHome(env.environ), "CANN toolkit home holding lib64/ (env ASCEND_TOOLKIT_HOME; the emulator: ascend/emu/build)")
	world := fs.Int("world-size", 1, "number of NPUs (ranks) to check together; collectives need 2 or more")
	precision := fs.String("precision", "bf16", "bf16 (production: bfloat16 into the matmuls) or f32 (verification)")
	lf := addLogFlags(fs, env)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return exitError{code: 2, msg: fmt.Sprintf("unexpected arguments %v", fs.Args())}
	}
	log, err := lf.logger(env.stderr)
	if err != nil {
		return exitError{code: 2, msg: err.Error()}
	}
	log.Info("ascend-check", "cann_home", *home, "world_size", *world, "precision", *precision)
	res, err := ascend.Check(ascend.Options{CANNHome: *home, Precision: *precision}, *world)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OP\tCANN\tREL ERR\tTOLERANCE\tRESULT")
	failed := 0
	for _, r := range res {
		status := "ok"
		if !r.Pass() {
			failed++
			status = "FAIL"
			if r.Err != nil {
				status = "FAIL: " + r.Err.Error()
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%.3g\t%.3g\t%s\n", r.Op, r.CANN, r.RelErr, r.Tolerance, status)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%d of %d ops match the reference (world size %d, %s, CANN home %s)\n", len(res)-failed, len(res), *world, *precision, *home)
	if failed > 0 {
		return exitError{code: 1, msg: fmt.Sprintf("%d ops differ from the reference", failed)}
	}
	return nil
}
