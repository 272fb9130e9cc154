package main

func runAscendCheck(env *cmdEnv, args []string) error {
	return notBuilt("gateway ascend-check", 12)
}
