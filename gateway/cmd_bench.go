package main

func runBench(env *cmdEnv, args []string) error {
	return notBuilt("gateway bench", 11)
}
