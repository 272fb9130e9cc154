// Package sessions stores multi-turn chat history by session id: the Store interface, an
// in-memory store (Memory, the embedded default) and a Redis store (Redis, go-redis v9) that
// several gateways can share.
//
// A session belongs to one owner (the tenant of the API key that made it); to every other
// owner it does not exist (ErrNotFound). Its id is 128 bits from crypto/rand. It holds an
// optional system prompt, string metadata, and completed turns. A Turn is stored whole,
// in one atomic write, only after the reply completed: the user (+tool) messages, the
// assistant reply, and the exact token ids that were prefilled and sampled, so the next
// turn's prompt is built from those ids (re-tokenizing sampled text can give other ids and
// defeat prefix reuse). A failed or cancelled turn appends nothing.
//
// A chat turn through the gateway is:
//
//	release, err := store.Acquire(ctx, owner, id) // ErrBusy -> 409 session_busy
//	defer release()
//	s, err := store.Get(ctx, owner, id)           // history; refreshes the TTL
//	kept, dropped := sessions.TrimTurns(s.Turns, budget, nil)
//	... run the model ...
//	err = store.AppendTurn(ctx, owner, id, len(s.Turns), turn) // ErrConflict: someone else won
//
// Every use (Create, Get, Acquire, AppendTurn, SetMetadata) sets Session.Updated and
// refreshes the TTL; a session unused for Options.TTL disappears. List orders by Updated.
//
// # Redis key layout
//
// All keys start with "dsgate:". Every key of a session expires Options.TTL after its last use.
//
//	dsgate:sess:<id>         hash   owner, created, updated (unix ns), system,
//	                                metadata (JSON object), last (nonce of the last append)
//	dsgate:sess:<id>:turns   list   one turn per element, oldest first, in a small binary
//	                                format ("T\x01", messages, ids as little-endian int32;
//	                                see encode.go)
//	dsgate:sess:<id>:busy    string random token of the current Acquire; PX Options.BusyTTL
//	dsgate:owner:<owner>     zset   member: session id, score: Updated in unix µs; expires
//	                                with the owner's newest session
//
// The number of turns is the length of the turns list: a turn is one list element, so a half
// turn cannot exist. Entries of expired sessions leave the owner index lazily (List drops
// scores older than now-TTL, and any id whose hash is gone).
//
// # Rationale: Lua scripts, not WATCH/MULTI
//
// Each operation is one Lua script (see scripts.go): the owner check, the expected-turn check,
// the write, the TTL refresh and the owner-index update run atomically on the server, in one
// round trip. WATCH/MULTI would need three or more round trips (WATCH, LLEN, MULTI...EXEC)
// and, under contention, optimistic aborts retried by the client; a script simply answers
// "conflict" with the current turn count, and the caller decides (the gateway reports it; a
// retry re-reads the history). Scripts also make the busy mark check-and-set and the
// release compare-and-delete exact. A script's writes reach the AOF and replicas as one
// MULTI/EXEC block, so a crash never leaves half of one.
//
// go-redis retries a command after a dropped connection. AppendTurn is safe to retry: the
// script stores a per-call nonce, and a retry that finds its own append already committed
// answers success instead of a false conflict. Still, when Redis dies after committing an
// append but before replying, the caller sees ErrUnavailable for a turn that is stored (the
// usual in-doubt case of any remote write); a later AppendTurn with the old count then
// gets ErrConflict, never a duplicate.
//
// The scripts build session-hash keys from ids inside List, so the store needs a single Redis
// (or a primary with replicas), not Redis Cluster.
//
// # Failures
//
// Errors wrap ErrNotFound, ErrBusy, ErrConflict or ErrUnavailable (match with errors.Is); a
// cancelled caller context gives the context's error instead. While Redis is unreachable
// every call fails with ErrUnavailable (within ~0.5 s; fast once the pool's breaker is open);
// the go-redis pool redials by itself, so the same Store works again within about a second
// of Redis's return (TestRedisKillRestart proves it). Whether
// committed turns survive a Redis restart is Redis's persistence setting: run it with
// appendonly yes (appendfsync always or everysec) in production.
package sessions
