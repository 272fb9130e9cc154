package main

func runConvert(env *cmdEnv, args []string) error {
	return notBuilt("gateway convert", 5)
}
