package extensions

// SharedCacheDir is the compilation cache TestMain prepared, for the external tests.
func SharedCacheDir() string { return fixtures.cacheDir }

// FixtureModule returns one of the modules TestMain prepared (an example or a WAT module).
func FixtureModule(name string) []byte {
	if b, ok := fixtures.examples[name]; ok {
		return b
	}
	return fixtures.wat[name]
}
