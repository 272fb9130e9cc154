package sessions

import "github.com/redis/go-redis/v9"

// The Lua scripts of the Redis store. Each runs atomically on the server (nothing else runs
// between its commands, and AOF/replicas receive its writes as one MULTI/EXEC block), in one
// round trip. Scripts return integer status codes first; see the scripts for the rest.
//
// Common arguments of the "touching" scripts (get, acquire, append, setmeta):
//   KEYS[1] session hash, KEYS[2] turns list, KEYS[3] owner index
//   ARGV[1] owner, ARGV[2] now (unix ns, the new 'updated'), ARGV[3] TTL (ms),
//   ARGV[4] session id, ARGV[5] now (unix µs, the owner-index score)
// A script answers status 0 (not found) unless the hash exists and its owner is ARGV[1].

// touchLua marks the session used: updated time, TTL of all its keys and of the owner
// index (which therefore outlives its newest session), and its owner-index score.
const touchLua = `
local function touch()
  redis.call('HSET', KEYS[1], 'updated', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
local function owned()
  return redis.call('HGET', KEYS[1], 'owner') == ARGV[1]
end
`

// createScript: ARGV[6] system, ARGV[7] metadata JSON. Status 1 created (or a retry of this
// very create found it done), 2 the id already exists (a collision of 128 random bits).
var createScript = redis.NewScript(touchLua + `
if redis.call('EXISTS', KEYS[1]) == 1 then
  if owned() and redis.call('HGET', KEYS[1], 'created') == ARGV[2] then return 1 end
  return 2
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'created', ARGV[2], 'system', ARGV[6], 'metadata', ARGV[7])
touch()
return 1
`)

// getScript: returns {1, created, updated, system, metadata, {turn JSON...}}.
var getScript = redis.NewScript(touchLua + `
if not owned() then return {0} end
touch()
local m = redis.call('HMGET', KEYS[1], 'created', 'system', 'metadata')
return {1, m[1], ARGV[2], m[2], m[3], redis.call('LRANGE', KEYS[2], 0, -1)}
`)

// acquireScript: KEYS[4] busy key; ARGV[6] token, ARGV[7] busy TTL (ms). Status 1 acquired
// (also when a retry finds its own token), 2 busy.
var acquireScript = redis.NewScript(touchLua + `
if not owned() then return 0 end
if not redis.call('SET', KEYS[4], ARGV[6], 'NX', 'PX', ARGV[7]) then
  if redis.call('GET', KEYS[4]) == ARGV[6] then return 1 end
  return 2
end
touch()
return 1
`)

// releaseScript: KEYS[1] busy key, ARGV[1] token. Deletes the mark only if it is still ours.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// appendScript: ARGV[6] expected turn count, ARGV[7] turn JSON, ARGV[8] a random nonce of this
// call. Status {1} appended, {2, n} conflict (n turns stored). The nonce is kept in the hash
// ('last'), so a client retry of an append that did commit (its reply lost to a dropped
// connection) answers 1 instead of a false conflict; it never appends twice.
var appendScript = redis.NewScript(touchLua + `
if not owned() then return {0} end
local n = redis.call('LLEN', KEYS[2])
local want = tonumber(ARGV[6])
if n ~= want then
  if n == want + 1 and redis.call('HGET', KEYS[1], 'last') == ARGV[8] then return {1} end
  return {2, n}
end
redis.call('RPUSH', KEYS[2], ARGV[7])
redis.call('HSET', KEYS[1], 'last', ARGV[8])
touch()
return {1}
`)

// setMetaScript: ARGV[6] metadata JSON. Status 1 done.
var setMetaScript = redis.NewScript(touchLua + `
if not owned() then return 0 end
redis.call('HSET', KEYS[1], 'metadata', ARGV[6])
touch()
return 1
`)

// deleteScript: KEYS[1] hash, KEYS[2] turns, KEYS[3] owner index, KEYS[4] busy key;
// ARGV[1] owner, ARGV[2] id. Status 1 deleted.
var deleteScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
`)

// listScript: KEYS[1] owner index; ARGV[1] cutoff (unix µs: older scores have expired),
// ARGV[2] offset, ARGV[3] limit (<= 0: all), ARGV[4] session-hash key prefix. Drops expired
// index entries, then walks the index newest first; an entry whose hash is gone (evicted, or
// expired early by clock skew between gateways) is dropped too. Returns
// {total, id, created, updated, system, metadata, id, ...}.
var listScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local total = redis.call('ZCARD', KEYS[1])
local pos = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
if limit <= 0 then limit = total end
local out = {0}
local rows = 0
while rows < limit do
  local ids = redis.call('ZREVRANGE', KEYS[1], pos, pos + limit - rows - 1)
  if #ids == 0 then break end
  local removed = 0
  for _, id in ipairs(ids) do
    local m = redis.call('HMGET', ARGV[4] .. id, 'created', 'updated', 'system', 'metadata')
    if not m[1] then
      redis.call('ZREM', KEYS[1], id)
      removed = removed + 1
      total = total - 1
    else
      rows = rows + 1
      table.insert(out, id)
      table.insert(out, m[1])
      table.insert(out, m[2])
      table.insert(out, m[3] or '')
      table.insert(out, m[4] or '{}')
    end
  end
  pos = pos + #ids - removed
end
out[1] = total
return out
`)
