package extensions

// SharedCacheDir is the compilation cache TestMain prepared, for the external tests.
func SharedCacheDir() string { return fixtures.cacheDir }
