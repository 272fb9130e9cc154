package main

func runBatch(env *cmdEnv, args []string) error {
	return notBuilt("gateway batch", 11)
}
