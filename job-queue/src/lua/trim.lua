-- Drop expired ids from the done and dead indexes (their job hashes expire by
-- TTL on their own), at most `batch` from each per call. Workers run it on
-- every heartbeat, so an idle queue frees its indexes without new settles.
-- KEYS[1] = {q}:done (routing only; every key shares its hash tag)
-- ARGV: prefix, done retention ms, dead retention ms, batch
-- Returns { ids removed from done, ids removed from dead }; a full batch
-- means more may be left (call again).
local prefix = ARGV[1]
local done_ret = tonumber(ARGV[2])
local dead_ret = tonumber(ARGV[3])
local batch = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- the oldest ids (lowest scores) first; ZCOUNT and ZREMRANGEBYRANK keep the
-- work at O(log N + batch)
local function trim(key, cutoff)
  local n = redis.call('ZCOUNT', key, '-inf', string.format('(%d', cutoff))
  if n == 0 then return 0 end
  if n > batch then n = batch end
  return redis.call('ZREMRANGEBYRANK', key, 0, n - 1)
end
return {
  trim(prefix .. ':done', now - done_ret),
  trim(prefix .. ':dead', now - dead_ret),
}
