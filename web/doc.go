// Package web embeds the browser chat page served at "/" (static files, no build step).
package web
