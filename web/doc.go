// Package web embeds the browser chat page served at "/" (static files, no build step).
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// FS returns the page's files, rooted so that "index.html" is the chat page.
func FS() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has "static"; a failure is a build defect
	}
	return sub
}
