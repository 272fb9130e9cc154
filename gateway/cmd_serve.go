package main

func runServe(env *cmdEnv, args []string) error {
	return notBuilt("gateway serve", 7)
}
