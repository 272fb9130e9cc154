package main

func runChat(env *cmdEnv, args []string) error {
	return notBuilt("gateway chat", 11)
}
