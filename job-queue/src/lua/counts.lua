-- Counts of one queue, read atomically.
-- KEYS[1] = {q}:pending
-- ARGV: prefix, done retention ms, dead retention ms, worker ttl ms
-- Returns pending, scheduled, running, done, dead, oldest pending age ms (-1: none),
-- stale acks, lapsed leases, live workers.
local prefix = ARGV[1]
local done_ret = tonumber(ARGV[2])
local dead_ret = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local oldest = -1
local head = redis.call('LINDEX', prefix .. ':pending', 0)
if head then
  local f = redis.call('HMGET', prefix .. ':job:' .. head, 'ready_at', 'created')
  local ready = tonumber(f[1]) or tonumber(f[2])
  if ready then oldest = math.max(0, now - ready) end
end
local st = redis.call('HMGET', prefix .. ':stats', 'stale_acks', 'lapsed')
return {
  redis.call('LLEN', prefix .. ':pending'),
  redis.call('ZCARD', prefix .. ':scheduled'),
  redis.call('ZCARD', prefix .. ':leased'),
  redis.call('ZCOUNT', prefix .. ':done', now - done_ret, '+inf'),
  redis.call('ZCOUNT', prefix .. ':dead', now - dead_ret, '+inf'),
  oldest,
  tonumber(st[1] or 0),
  tonumber(st[2] or 0),
  redis.call('ZCOUNT', prefix .. ':workers', now - ttl, '+inf'),
}
