package main

func runLogits(env *cmdEnv, args []string) error {
	return notBuilt("gateway logits", 3)
}
