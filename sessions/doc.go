// Package sessions stores multi-turn chat history by session id: the Store interface,
// an in-memory store (the embedded default) and a Redis store (go-redis v9).
package sessions
