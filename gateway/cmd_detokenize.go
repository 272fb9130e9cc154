package main

func runDetokenize(env *cmdEnv, args []string) error {
	return notBuilt("gateway detokenize", 4)
}
