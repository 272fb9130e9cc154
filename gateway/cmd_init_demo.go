package main

func runInitDemo(env *cmdEnv, args []string) error {
	return notBuilt("gateway init-demo", 3)
}
