package main

func runTokenize(env *cmdEnv, args []string) error {
	return notBuilt("gateway tokenize", 4)
}
